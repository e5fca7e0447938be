// SPDX-License-Identifier: MIT
#include "cli/common.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <ctime>
#include <optional>
#include <string_view>

#include "base/log.h"

namespace profctl::cli {

void add_common_options(CLI::App& app, CommonOptions& opts) {
  app.add_flag("-v,--verbose", opts.verbose, "Diagnostics on stderr (-v debug, -vv trace)");
  app.add_option("--log", opts.log_spec, "Per-stage log levels, e.g. attach=debug,unwind=trace");
  app.add_flag("--debuginfod", opts.debuginfod,
               "Let libdwfl fetch missing debug info from debuginfod (DEBUGINFOD_URLS)");
}

void apply_logging(const CommonOptions& opts) {
  auto level = opts.verbose >= 2   ? spdlog::level::trace
               : opts.verbose == 1 ? spdlog::level::debug
                                   : spdlog::level::warn;
  if (!configure_logging(level, opts.log_spec)) {
    throw UserError(ExitCode::kUsage, "bad --log value '" + opts.log_spec + "'",
                    "use STAGE=LEVEL[,STAGE=LEVEL...], levels trace debug info warn error off");
  }
}

pid_t parse_pid(const std::string& text) {
  long v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size() || v <= 0 || v > 0x3fffffff) {
    throw UserError(ExitCode::kUsage, "'" + text + "' is not a process id",
                    "give a positive number, e.g. profctl stack $(pidof app)");
  }
  return static_cast<pid_t>(v);
}

void throw_attach_error(const AttachError& e) {
  throw UserError(ExitCode::kAttach, e.message, e.hint);
}

namespace {

// A whole decimal number, e.g. "99", "0.5", "1e3": nothing before or after it (from_chars
// takes no sign '+', no spaces). NaN and infinities parse, and fail the range checks.
std::optional<double> parse_double(std::string_view text, size_t* used = nullptr) {
  double v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || (used == nullptr && p != text.data() + text.size())) {
    return std::nullopt;
  }
  if (used != nullptr) {
    *used = static_cast<size_t>(p - text.data());
  }
  return v;
}

std::optional<int64_t> parse_int(std::string_view text) {
  int64_t v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || p != text.data() + text.size()) {
    return std::nullopt;
  }
  return v;
}

bool in_range(double v, double lo, double hi) { return v >= lo && v <= hi; }  // false for NaN

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

// "" when `text` is a duration in range, else the one-line reason.
std::string duration_error(const std::string& text, double* seconds) {
  size_t used = 0;
  const std::optional<double> v = parse_double(text, &used);
  const std::string unit = v ? text.substr(used) : std::string();
  const double scale = unit.empty() || unit == "s" ? 1
                       : unit == "ms"              ? 1e-3
                       : unit == "m"               ? 60
                       : unit == "h"               ? 3600
                                                   : -1;
  const std::string range = "a duration from 1ms to 30 days (e.g. 30s, 500ms, 2m, 1h)";
  if (!v || scale < 0) {
    return "'" + text + "' is not a duration: give " + range;
  }
  const double s = *v * scale;
  if (!in_range(s, kMinDurationS, kMaxDurationS)) {
    return "'" + text + "' is out of range: give " + range;
  }
  *seconds = s;
  return {};
}

// [lo, hi] integer option, e.g. --top.
CLI::Validator int_range(const std::string& what, int64_t lo, int64_t hi) {
  return CLI::Validator(
      [what, lo, hi](std::string& text) -> std::string {
        const std::optional<int64_t> v = parse_int(text);
        if (!v || *v < lo || *v > hi) {
          return "'" + text + "' is out of range: " + what + " must be an integer from " +
                 std::to_string(lo) + " to " + std::to_string(hi);
        }
        return {};
      },
      "INT in [" + std::to_string(lo) + ".." + std::to_string(hi) + "]");
}

}  // namespace

double parse_duration_s(const std::string& text) {
  double s = 0;
  if (std::string why = duration_error(text, &s); !why.empty()) {
    throw UserError(ExitCode::kUsage, "bad duration " + why);
  }
  return s;
}

CLI::Validator duration_value() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        double s = 0;
        return duration_error(text, &s);
      },
      "DURATION in [1ms..30d]");
}

CLI::Validator rate_value() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const std::optional<double> v = parse_double(text);
        if (!v || !in_range(*v, kMinRateHz, kMaxRateHz)) {
          return "'" + text +
                 "' is out of range: the rate must be a number of Hz from 0.1 to 10000";
        }
        return {};
      },
      "HZ in [0.1..10000]");
}

CLI::Validator top_value() { return int_range("the number of stacks", kMinTop, kMaxTop); }

CLI::Validator tid_value() { return int_range("a thread id", 1, 0x3fffffff); }

CLI::Validator stack_bytes_value() {
  return CLI::Validator(
      [](std::string& text) -> std::string {
        const std::string range =
            "the size must be from 64 bytes to 1G (a number of bytes, or with "
            "a K, M or G suffix: 64K, 8M, 1G)";
        const size_t digits = text.find_first_not_of("0123456789");
        const std::string suffix = lower(digits == std::string::npos ? "" : text.substr(digits));
        const int shift = suffix.empty() || suffix == "b"                      ? 0
                          : suffix == "k" || suffix == "kb" || suffix == "kib" ? 10
                          : suffix == "m" || suffix == "mb" || suffix == "mib" ? 20
                          : suffix == "g" || suffix == "gb" || suffix == "gib" ? 30
                                                                               : -1;
        uint64_t n = 0;
        const char* end = text.data() + std::min(digits, text.size());
        auto [p, ec] = std::from_chars(text.data(), end, n);
        // n above 2^33 would overflow the shift below; it is out of range anyway.
        if (shift < 0 || ec != std::errc() || p != end || n > (uint64_t{1} << 33) ||
            (n << shift) < kMinStackBytes || (n << shift) > kMaxStackBytes) {
          return "'" + text + "' is out of range: " + range;
        }
        text = std::to_string(n << shift);
        return {};
      },
      "SIZE in [64..1G]");
}

std::string utc_now_rfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace profctl::cli
