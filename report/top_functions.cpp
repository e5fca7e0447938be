// SPDX-License-Identifier: MIT
#include "report/top_functions.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>

#include "base/saturating.h"
#include "report/units.h"

namespace profctl {
namespace {

using report_detail::format_value;
using report_detail::frame_name;
using report_detail::percent;

struct FunctionCost {
  int64_t flat = 0;
  int64_t cum = 0;
};

std::string right(const std::string& s, size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

}  // namespace

void write_top_functions(const std::vector<RankedStack>& stacks, const SampleType& type,
                         int64_t total, size_t top_n, std::ostream& out) {
  std::map<std::string, FunctionCost> costs;
  for (const RankedStack& s : stacks) {
    if (!s.frames->empty()) {
      FunctionCost& leaf = costs[frame_name(s.frames->front())];
      leaf.flat = sat_add(leaf.flat, s.value);
    }
    std::set<std::string> seen;  // recursion counts once per stack toward cum
    for (const Frame& f : *s.frames) {
      if (std::string name = frame_name(f); seen.insert(name).second) {
        FunctionCost& c = costs[name];
        c.cum = sat_add(c.cum, s.value);
      }
    }
  }
  std::vector<std::pair<std::string, FunctionCost>> rows(costs.begin(), costs.end());
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    if (a.second.flat != b.second.flat) {
      return a.second.flat > b.second.flat;
    }
    return a.second.cum > b.second.cum;
  });
  out << "\ntop " << std::min(top_n, rows.size()) << " of " << rows.size() << " functions by "
      << type.type << ":\n";
  out << right("flat", 12) << right("flat%", 8) << right("sum%", 8) << right("cum", 12)
      << right("cum%", 8) << "  function\n";
  int64_t sum = 0;
  for (size_t r = 0; r < rows.size() && r < top_n; ++r) {
    const auto& [name, cost] = rows[r];
    sum = sat_add(sum, cost.flat);
    out << right(format_value(cost.flat, type.unit), 12) << right(percent(cost.flat, total), 8)
        << right(percent(sum, total), 8) << right(format_value(cost.cum, type.unit), 12)
        << right(percent(cost.cum, total), 8) << "  " << name << '\n';
  }
}

}  // namespace profctl
