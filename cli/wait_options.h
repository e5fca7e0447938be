// SPDX-License-Identifier: MIT
// The block and mutex profiles' options (attach, run): --block-rate with the meaning of
// Go's runtime.SetBlockProfileRate, --mutex-fraction with SetMutexProfileFraction's.
// Validated here, before anything touches a target (a bad value is a usage error).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace profctl::cli {

struct WaitOptions {
  uint64_t block_rate_ns = 10'000;  // waits this long or longer always recorded
  uint64_t mutex_fraction = 1;      // 1 in N contended lock waits recorded
};

struct WaitOptionsCli {
  std::string block_rate = "10us";
  std::string mutex_fraction = "1";
};

void add_wait_capture_options(CLI::App& app, WaitOptionsCli& o);
// Throws UserError(kUsage).
WaitOptions resolve_wait_options(const WaitOptionsCli& o);
// "10us", "1ms", "500ns", "2s", or a plain count of nanoseconds; at least 1 ns.
uint64_t parse_block_rate_ns(const std::string& text);

}  // namespace profctl::cli
