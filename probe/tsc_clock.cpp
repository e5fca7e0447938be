// SPDX-License-Identifier: MIT
#include "probe/tsc_clock.h"

#include <time.h>
#include <x86intrin.h>

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

uint64_t TscClock::to_monotonic_ns(uint64_t tsc) const {
  // Subtract in integers first: a double holds a raw TSC value only to ~2^53 ticks.
  auto delta = static_cast<int64_t>(tsc - tsc0_);
  return ns0_ +
         static_cast<uint64_t>(static_cast<int64_t>(static_cast<double>(delta) * ns_per_tick_));
}

uint64_t TscClock::ticks_to_ns(uint64_t ticks) const {
  return static_cast<uint64_t>(static_cast<double>(ticks) * ns_per_tick_);
}

}  // namespace profctl::probe
