#include "report/units.h"

#include <cinttypes>
#include <cstdio>
#include <cstdlib>

namespace profctl::report_detail {

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
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

namespace {

std::string scaled(int64_t v, const char* const* names, const double* factors, int n) {
  const double a = std::llabs(v);
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
