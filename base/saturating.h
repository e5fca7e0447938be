// SPDX-License-Identifier: MIT
// Saturating arithmetic for counters whose inputs are not ours: sizes that a target's
// allocator was asked for, and numbers read back from a user's capture.json. Signed
// overflow is undefined behaviour in C++, so a hostile or corrupt input must not be able to
// reach a plain `+` or `*`; at worst a total sticks at the type's limit.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

namespace profctl {

inline int64_t sat_add(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return r;
}

inline int64_t sat_sub(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) {
    return b < 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return r;
}

inline uint64_t sat_add(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_add_overflow(a, b, &r) ? std::numeric_limits<uint64_t>::max() : r;
}

// a * b for non-negative counts, capped at INT64_MAX.
inline int64_t sat_mul_nonneg(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_mul_overflow(a, b, &r) ||
      r > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return std::numeric_limits<int64_t>::max();
  }
  return static_cast<int64_t>(r);
}

// An unsigned count as int64, capped at INT64_MAX.
inline int64_t sat_i64(uint64_t v) {
  return v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())
             ? std::numeric_limits<int64_t>::max()
             : static_cast<int64_t>(v);
}

// Truncation toward zero (Go's int64(float64)), but defined for every double: NaN is 0 and
// values out of range stick at the limits (the conversion itself would be undefined).
inline int64_t sat_trunc(double v) {
  if (std::isnan(v)) {
    return 0;
  }
  if (v >= 9223372036854775807.0) {
    return std::numeric_limits<int64_t>::max();
  }
  if (v <= -9223372036854775808.0) {
    return std::numeric_limits<int64_t>::min();
  }
  return static_cast<int64_t>(v);
}

}  // namespace profctl
