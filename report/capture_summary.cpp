// SPDX-License-Identifier: MIT
#include "report/capture_summary.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>

#include "report/profile_loss.h"

namespace profctl {
namespace {

std::string summary_function(const std::string& kind, const Sample& s) {
  const bool by_leaf = kind == "cpu" || kind == "wall";
  for (const Frame& f : s.frames) {
    const bool runtime = f.module.find("/libc.so") != std::string::npos ||
                         f.module.find("/libstdc++.so") != std::string::npos ||
                         f.module.find("/ld-linux") != std::string::npos;
    if (by_leaf || !runtime) {
      return f.function ? *f.function : f.module;
    }
  }
  return s.frames.empty() ? "?" : s.frames.front().function.value_or("?");
}

std::string printf_string(const char* fmt, double a, double b = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, a, b);
  return buf;
}

}  // namespace

void write_capture_summary(const Capture& c, const CaptureSummary& s, std::ostream& out) {
  out << "profctl: pid " << c.target.pid << " (" << c.target.exe
      << "): " << printf_string("%.2fs", c.window.duration_s) << " captured";
  if (s.requested_hz > 0) {
    out << ", " << s.samples << " samples (" << s.reused << " reused, " << s.lost << " lost), "
        << printf_string("%.1f Hz of %.0f requested", s.achieved_hz, s.requested_hz);
  }
  out << "\n";
  std::string names;
  for (const std::string& f : s.files) {
    names += (names.empty() ? "" : ", ") + f.substr(std::min(f.size(), s.dir.size() + 1));
  }
  out << "profctl: wrote " << s.files.size() << " files in " << s.dir << ": " << names << "\n";
  for (const auto& [kind, p] : c.profiles) {
    if (p.sample_types.empty()) {
      continue;
    }
    const size_t main = main_sample_type(p);
    std::map<std::string, int64_t> by_function;
    int64_t total = 0;
    for (const Sample& smp : p.samples) {
      const int64_t v = main < smp.values.size() ? smp.values[main] : 0;
      by_function[summary_function(kind, smp)] += v;
      total += v;
    }
    // A lossy profile says so here too, in the words (and numbers) of its own header.
    const std::string partial = partial_line(kind, p);
    if (total <= 0) {
      if (!partial.empty()) {
        out << "profctl: " << kind << ": " << partial << "\n";
      }
      continue;
    }
    std::vector<std::pair<int64_t, std::string>> top;
    for (const auto& [fn, v] : by_function) {
      top.emplace_back(v, fn);
    }
    std::sort(top.begin(), top.end(), std::greater<>());
    out << "profctl: " << kind << " (" << p.sample_types[main].type << "): ";
    for (size_t i = 0; i < top.size() && i < 3; ++i) {
      out << (i == 0 ? "" : ", ") << top[i].second
          << printf_string(" %.1f%%",
                           100.0 * static_cast<double>(top[i].first) / static_cast<double>(total));
    }
    if (!partial.empty()) {
      out << " (" << partial << ")";
    }
    out << "\n";
  }
}

}  // namespace profctl
