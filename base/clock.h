// SPDX-License-Identifier: MIT
// The one CLOCK_MONOTONIC reading in nanoseconds: sample times, stop latencies and probe
// records all share this clock, so they can be compared with each other.
#pragma once

#include <time.h>

#include <cstdint>

namespace profctl {

inline uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace profctl
