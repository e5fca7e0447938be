// SPDX-License-Identifier: MIT
#include "report/folded_writer.h"

#include <map>

#include "base/saturating.h"
#include "report/units.h"

namespace profctl {
namespace {

// ';' separates frames and a newline ends the line, so neither may appear inside a name.
std::string folded_name(const Frame& f, bool lines) {
  std::string s = report_detail::frame_name(f);
  if (lines && f.file) {
    s += " " + *f.file + (f.line ? ":" + std::to_string(*f.line) : "");
  }
  for (char& ch : s) {
    if (ch == ';') {
      ch = ':';
    } else if (ch == '\n' || ch == '\r') {
      ch = ' ';
    }
  }
  return s;
}

}  // namespace

void write_folded(const Capture& c, const std::string& kind, std::ostream& out, size_t value_index,
                  bool lines) {
  auto it = c.profiles.find(kind);
  if (it == c.profiles.end() || value_index >= it->second.sample_types.size()) {
    return;
  }
  std::map<std::string, int64_t> stacks;
  for (const Sample& s : it->second.samples) {
    std::string key;
    for (auto f = s.frames.rbegin(); f != s.frames.rend(); ++f) {
      if (!key.empty()) {
        key += ';';
      }
      key += folded_name(*f, lines);
    }
    if (key.empty()) {
      key = "[no frames]";
    }
    int64_t& v = stacks[key];  // saturating: the values may come from a user's capture.json
    v = sat_add(v, value_index < s.values.size() ? s.values[value_index] : int64_t{0});
  }
  for (const auto& [stack, value] : stacks) {
    out << stack << ' ' << value << '\n';
  }
}

}  // namespace profctl
