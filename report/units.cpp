// SPDX-License-Identifier: MIT
#include "report/units.h"

#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <limits>

namespace profctl::report_detail {

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

int64_t saturating_add(int64_t a, int64_t b) {
  int64_t sum = 0;
  if (__builtin_add_overflow(a, b, &sum)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return sum;
}

int64_t seconds_to_ns(double seconds) {
  const double ns = seconds * 1e9;
  if (std::isnan(ns)) {
    return 0;
  }
  // 2^63 is exactly representable; every double below it converts without overflow.
  if (ns >= 9223372036854775808.0) {
    return std::numeric_limits<int64_t>::max();
  }
  if (ns <= -9223372036854775808.0) {
    return std::numeric_limits<int64_t>::min();
  }
  return static_cast<int64_t>(ns);
}

std::string frame_name(const Frame& f) {
  if (f.function) {
    return *f.function;
  }
  const size_t slash = f.module.rfind('/');
  const std::string base = slash == std::string::npos ? f.module : f.module.substr(slash + 1);
  return base + "+" + hex(f.function_start.value_or(f.offset));
}

std::string function_key(const Frame& f) {
  std::string key = frame_name(f);
  key += '\x1f';
  key += f.module;
  return key;
}

std::string frame_line(const Frame& f) {
  std::string s = frame_name(f);  // module+offset when unnamed, as every other output
  if (f.file) {
    s += "  at " + *f.file;
    if (f.line) {
      s += ":" + std::to_string(*f.line);
    }
  }
  if (f.inlined) {
    s += "  (inlined)";
  } else {
    s += "  (" + f.module + "+" + hex(f.offset) + ")";
  }
  return s;
}

std::string percent(int64_t v, int64_t total) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%",
                total == 0 ? 0.0 : 100.0 * static_cast<double>(v) / static_cast<double>(total));
  return buf;
}

namespace {

std::string scaled(int64_t v, const char* const* names, const double* factors, int n) {
  // In double: the magnitude of INT64_MIN has no int64 (llabs of it is undefined).
  const double a = std::fabs(static_cast<double>(v));
  for (int i = n - 1; i > 0; --i) {
    if (a >= factors[i]) {
      char buf[48];
      std::snprintf(buf, sizeof buf, "%.2f%s", static_cast<double>(v) / factors[i], names[i]);
      return buf;
    }
  }
  return std::to_string(v) + names[0];
}

}  // namespace

std::string format_value(int64_t v, const std::string& unit) {
  if (v == 0) {
    return "0";  // as pprof prints it, whatever the unit
  }
  if (unit == "nanoseconds") {
    static constexpr const char* kNames[] = {"ns", "us", "ms", "s"};
    static constexpr double kFactors[] = {1, 1e3, 1e6, 1e9};
    return scaled(v, kNames, kFactors, 4);
  }
  if (unit == "bytes") {
    static constexpr const char* kNames[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    static constexpr double kFactors[] = {1, 1024.0, 1024.0 * 1024, 1024.0 * 1024 * 1024,
                                          1024.0 * 1024 * 1024 * 1024};
    return scaled(v, kNames, kFactors, 5);
  }
  if (unit == "count" || unit.empty()) {
    return std::to_string(v);
  }
  return std::to_string(v) + " " + unit;
}

}  // namespace profctl::report_detail
