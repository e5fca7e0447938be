// SPDX-License-Identifier: MIT
// Pieces every subcommand shares: logging flags, the pid argument, the error line.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "attach/traced_process.h"
#include "base/user_error.h"

namespace profctl::cli {

struct CommonOptions {
  int verbose = 0;          // -v: debug, -vv: trace
  std::string log_spec;     // --log attach=debug,unwind=trace
  bool debuginfod = false;  // --debuginfod
};

void add_common_options(CLI::App& app, CommonOptions& opts);
// Applies -v/--log; throws UserError(kUsage) on a malformed --log.
void apply_logging(const CommonOptions& opts);
// Parses a PID argument: a positive decimal number, else UserError(kUsage).
pid_t parse_pid(const std::string& text);
// Turns an AttachError into the UserError that main prints (exit code 2).
[[noreturn]] void throw_attach_error(const AttachError& e);
// "2026-11-24T10:00:00Z" for the current time.
std::string utc_now_rfc3339();

// The valid ranges of option values (man/profctl.1 lists them). A value outside its range
// is a usage error naming the range, never a capture with a nonsense period or length.
inline constexpr double kMinDurationS = 1e-3;                  // -d 1ms
inline constexpr double kMaxDurationS = 30.0 * 86400;          // -d 30 days
inline constexpr double kMinRateHz = 0.1;                      // --rate
inline constexpr double kMaxRateHz = 10000;                    //
inline constexpr uint64_t kMinStackBytes = 64;                 // --stack-bytes: one frame's worth
inline constexpr uint64_t kMaxStackBytes = uint64_t{1} << 30;  // 1 GiB, the largest stack
inline constexpr int64_t kMinTop = 1;                          // --top
inline constexpr int64_t kMaxTop = 1'000'000;                  //

// -d: "30s", "1.5s", "500ms", "2m", "1h" or plain seconds, within [1ms, 30 days].
// Throws UserError(kUsage) with one line naming the valid range.
double parse_duration_s(const std::string& text);

// CLI11 validators for those options: each rejects a value outside its range (NaN, a
// negative size, an empty duration...) at parse time with one line naming the range.
CLI::Validator duration_value();
CLI::Validator rate_value();
CLI::Validator top_value();
CLI::Validator tid_value();
// A transform: "8M", "64K", "1G", "4096" (1024-based suffixes) -> a plain byte count.
CLI::Validator stack_bytes_value();

}  // namespace profctl::cli
