// SPDX-License-Identifier: MIT
#include "cli/wait_options.h"

#include <charconv>
#include <cmath>

#include "base/user_error.h"

namespace profctl::cli {

void add_wait_capture_options(CLI::App& app, WaitOptionsCli& o) {
  app.add_option("--block-rate", o.block_rate,
                 "block: waits this long or longer are all recorded, shorter ones sampled in "
                 "proportion (Go's SetBlockProfileRate; 10us, 1ms, or ns)")
      ->capture_default_str();
  app.add_option("--mutex-fraction", o.mutex_fraction,
                 "mutex: record 1 in N contended lock waits (Go's SetMutexProfileFraction)")
      ->capture_default_str();
}

uint64_t parse_block_rate_ns(const std::string& text) {
  auto bad = [&]() -> uint64_t {
    throw UserError(ExitCode::kUsage, "bad --block-rate '" + text + "'",
                    "give a duration of at least 1ns, e.g. 10us (the default), 1ms, 500ns, or a "
                    "number of nanoseconds");
  };
  double v = 0;
  const char* b = text.data();
  const char* e = text.data() + text.size();
  auto [end, ec] = std::from_chars(b, e, v);
  if (ec != std::errc() || end == b || !std::isfinite(v)) {
    return bad();
  }
  const std::string unit(end, e);
  double scale = 0;
  if (unit.empty() || unit == "ns") {
    scale = 1;
  } else if (unit == "us") {
    scale = 1e3;
  } else if (unit == "ms") {
    scale = 1e6;
  } else if (unit == "s") {
    scale = 1e9;
  } else {
    return bad();
  }
  const double ns = v * scale;
  if (ns < 1 || ns > 3.6e12) {
    return bad();
  }
  return static_cast<uint64_t>(std::llround(ns));
}

WaitOptions resolve_wait_options(const WaitOptionsCli& o) {
  WaitOptions w;
  w.block_rate_ns = parse_block_rate_ns(o.block_rate);
  uint64_t f = 0;
  const char* b = o.mutex_fraction.data();
  const char* e = b + o.mutex_fraction.size();
  auto [end, ec] = std::from_chars(b, e, f);
  if (ec != std::errc() || end != e || f < 1 || f > 1'000'000) {
    throw UserError(ExitCode::kUsage, "bad --mutex-fraction '" + o.mutex_fraction + "'",
                    "give N from 1 (every contention) to 1000000: 1 in N contended lock waits "
                    "is recorded");
  }
  w.mutex_fraction = f;
  return w;
}

}  // namespace profctl::cli
