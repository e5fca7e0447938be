// SPDX-License-Identifier: MIT
#include "capture/hottest_function.h"

#include <algorithm>
#include <map>

namespace profctl {

HottestFunction::HottestFunction(TargetDwfl& dwfl, uint32_t root_space) : root_space_(root_space) {
  SymbolizeOptions so;
  so.source = false;
  so.inline_frames = false;
  sym_ = std::make_unique<Symbolizer>(dwfl, so);
}

void HottestFunction::update(const Collector& collector) {
  const auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::seconds(1)) {
    return;
  }
  last_ = now;
  std::map<std::string, uint64_t> by_function;
  uint64_t total = 0;
  for (const auto& leaf : collector.hottest_leaves(256)) {
    total += leaf.cpu_ns;
    if (leaf.space != 0 && leaf.space != root_space_) {
      continue;
    }
    const auto& frames = sym_->symbolize(leaf.pc, /*activation=*/true);
    if (!frames.empty() && frames.back().function) {
      by_function[*frames.back().function] += leaf.cpu_ns;
    }
  }
  auto best = std::max_element(by_function.begin(), by_function.end(),
                               [](const auto& a, const auto& b) { return a.second < b.second; });
  if (best != by_function.end() && total > 0) {
    name_ = best->first;
    share_ = static_cast<double>(best->second) / static_cast<double>(total);
  }
}

}  // namespace profctl
