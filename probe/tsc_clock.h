// SPDX-License-Identifier: MIT
// TscClock: converts the rdtsc values in probe records to CLOCK_MONOTONIC nanoseconds.
// Calibrated in profctl's own process: the TSC is invariant and shared by all cores on
// the x86-64 machines profctl runs on (constant_tsc, nonstop_tsc), so the target's rdtsc
// and profctl's are the same clock.
#pragma once

#include <chrono>
#include <cstdint>

namespace profctl::probe {

uint64_t read_tsc();

class TscClock {
 public:
  // Measures the TSC against CLOCK_MONOTONIC over `window` (blocks that long).
  static TscClock calibrate(std::chrono::milliseconds window = std::chrono::milliseconds(20));

  uint64_t to_monotonic_ns(uint64_t tsc) const;
  uint64_t ticks_to_ns(uint64_t ticks) const;
  double ticks_per_ns() const { return 1.0 / ns_per_tick_; }

 private:
  uint64_t tsc0_ = 0;
  uint64_t ns0_ = 0;
  double ns_per_tick_ = 1.0;
};

}  // namespace profctl::probe
