// SPDX-License-Identifier: MIT
#include "probe/tsc_clock.h"

#include <time.h>
#include <x86intrin.h>

#include <algorithm>
#include <thread>

#include "base/clock.h"

namespace profctl::probe {
namespace {

// A (tsc, ns) pair read as close together as possible: the tightest of a few tries.
std::pair<uint64_t, uint64_t> paired_reading() {
  uint64_t best_gap = UINT64_MAX;
  std::pair<uint64_t, uint64_t> best{};
  for (int i = 0; i < 16; ++i) {
    uint64_t t0 = read_tsc();
    uint64_t ns = monotonic_ns();
    uint64_t t1 = read_tsc();
    if (t1 - t0 < best_gap) {
      best_gap = t1 - t0;
      best = {t0 + (t1 - t0) / 2, ns};
    }
  }
  return best;
}

}  // namespace

uint64_t read_tsc() { return __rdtsc(); }

TscClock TscClock::calibrate(std::chrono::milliseconds window) {
  auto [t0, n0] = paired_reading();
  std::this_thread::sleep_for(window);
  auto [t1, n1] = paired_reading();
  TscClock c;
  c.tsc0_ = t1;
  c.ns0_ = n1;
  if (t1 > t0 && n1 > n0) {
    c.ns_per_tick_ = static_cast<double>(n1 - n0) / static_cast<double>(t1 - t0);
  }
  return c;
}

// Records carry TSC values the target wrote: any u64. The products are clamped into the
// integer range before the conversion (an out-of-range double-to-integer conversion is
// undefined behaviour).
uint64_t TscClock::to_monotonic_ns(uint64_t tsc) const {
  constexpr double kLimit = 9.0e18;  // < 2^63
  // Subtract in integers first: a double holds a raw TSC value only to ~2^53 ticks.
  auto delta = static_cast<int64_t>(tsc - tsc0_);
  const double ns = std::clamp(static_cast<double>(delta) * ns_per_tick_, -kLimit, kLimit);
  return ns0_ + static_cast<uint64_t>(static_cast<int64_t>(ns));
}

uint64_t TscClock::ticks_to_ns(uint64_t ticks) const {
  constexpr double kLimit = 1.8e19;  // < 2^64
  return static_cast<uint64_t>(std::min(static_cast<double>(ticks) * ns_per_tick_, kLimit));
}

}  // namespace profctl::probe
