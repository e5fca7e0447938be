// SPDX-License-Identifier: MIT
#include "report/capture_summary.h"

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <optional>

#include "report/profile_loss.h"
#include "report/units.h"

namespace profctl {
namespace {

// The function a sample is charged to, named as the text reports name it (a stripped
// program's function is "sort+0x4d20", never its file).
std::string summary_function(const std::string& kind, const Sample& s) {
  const bool by_leaf = kind == "cpu" || kind == "wall";
  for (const Frame& f : s.frames) {
    const bool runtime = f.module.find("/libc.so") != std::string::npos ||
                         f.module.find("/libstdc++.so") != std::string::npos ||
                         f.module.find("/ld-linux") != std::string::npos;
    if (by_leaf || !runtime) {
      return report_detail::frame_name(f);
    }
  }
  return s.frames.empty() ? "[no frames]" : report_detail::frame_name(s.frames.front());
}

std::string printf_string(const char* fmt, double a, double b = 0) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, a, b);
  return buf;
}

int64_t type_total(const Profile& p, size_t type) {
  int64_t total = 0;
  for (const Sample& smp : p.samples) {
    total = report_detail::saturating_add(total, type < smp.values.size() ? smp.values[type] : 0);
  }
  return total;
}

// "f 60.0%, g 30.0%, h 10.0%": the top three functions of one sample type.
std::string top_functions(const std::string& kind, const Profile& p, size_t type, int64_t total) {
  std::map<std::string, int64_t> by_function;
  for (const Sample& smp : p.samples) {
    int64_t& v = by_function[summary_function(kind, smp)];
    v = report_detail::saturating_add(v, type < smp.values.size() ? smp.values[type] : 0);
  }
  std::vector<std::pair<int64_t, std::string>> top;
  for (const auto& [fn, v] : by_function) {
    if (v > 0) {
      top.emplace_back(v, fn);
    }
  }
  std::sort(top.begin(), top.end(), std::greater<>());
  std::string out;
  for (size_t i = 0; i < top.size() && i < 3; ++i) {
    out += (i == 0 ? "" : ", ") + top[i].second +
           printf_string(" %.1f%%",
                         100.0 * static_cast<double>(top[i].first) / static_cast<double>(total));
  }
  return out;
}

// One line per captured kind, also when its main type is empty: a heap with nothing in use
// at the end still says what was allocated, a wait profile with no waits says so.
std::string profile_line(const std::string& kind, const Profile& p) {
  if (p.sample_types.empty()) {
    return "nothing recorded";
  }
  const size_t main = main_sample_type(p);
  const std::string& type = p.sample_types[main].type;
  std::string line = "(" + type + "): ";
  if (const int64_t total = type_total(p, main); total > 0) {
    return line + top_functions(kind, p, main, total);
  }
  line += type.rfind("inuse_", 0) == 0 ? "nothing in use at the end" : "nothing recorded";
  // The first other type with something in it, of the same unit when there is one
  // (inuse_space -> alloc_space).
  std::optional<size_t> other;
  for (size_t i = 0; i < p.sample_types.size(); ++i) {
    if (i == main || type_total(p, i) <= 0) {
      continue;
    }
    if (!other || (p.sample_types[i].unit == p.sample_types[main].unit &&
                   p.sample_types[*other].unit != p.sample_types[main].unit)) {
      other = i;
    }
  }
  if (other) {
    line += "; " + p.sample_types[*other].type + ": " +
            top_functions(kind, p, *other, type_total(p, *other));
  }
  return line;
}

void write_profile_line(const std::string& kind, const Profile& p, std::ostream& out) {
  out << "profctl: " << kind << (p.sample_types.empty() ? ": " : " ") << profile_line(kind, p);
  // A lossy profile says so here too, in the words (and numbers) of its own header.
  if (const std::string partial = partial_line(kind, p); !partial.empty()) {
    out << " (" << partial << ")";
  }
  out << "\n";
}

}  // namespace

void write_capture_summary(const Capture& c, const CaptureSummary& s, std::ostream& out) {
  out << "profctl: pid " << c.target.pid << " (" << c.target.exe
      << "): " << printf_string("%.2fs", c.window.duration_s) << " captured";
  if (s.requested_hz > 0) {
    out << ", " << s.samples << " samples (" << s.reused << " reused, " << s.lost << " lost), "
        << printf_string("%.1f Hz of %.0f requested", s.achieved_hz, s.requested_hz);
    if (auto src = c.options.find("cpu_samples"); src != c.options.end()) {
      out << (c.profiles.contains("cpu") ? ", cpu samples from "
                                         : ", running threads sampled from ")
          << src->second;
    }
  }
  out << "\n";
  std::string names;
  for (const std::string& f : s.files) {
    names += (names.empty() ? "" : ", ") + f.substr(std::min(f.size(), s.dir.size() + 1));
  }
  out << "profctl: wrote " << s.files.size() << " files in " << s.dir << ": " << names << "\n";
  for (const auto& [kind, p] : c.profiles) {
    write_profile_line(kind, p, out);
  }
}

}  // namespace profctl
