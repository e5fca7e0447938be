// SPDX-License-Identifier: MIT
// Small formatting helpers shared by the report writers.
#pragma once

#include <cstdint>
#include <string>

#include "symbolize/frame.h"

namespace profctl::report_detail {

// "0x7f3a2c001234": lowercase, no padding (capture.json's address and offset form).
std::string hex(uint64_t v);

// A frame's display name: the function, else "<module file name>+0x<function start>" (the
// start from the CFI, so every pc of one unnamed function has one name), else
// "<module file name>+0x<offset>".
std::string frame_name(const Frame& f);

// A frame for people: "function  at file:line  (module+0xoff)", "(inlined)" instead of the
// module for an inlined call; an unknown function by frame_name ("sort+0x4d20").
std::string frame_line(const Frame& f);

// v as a share of total: "12.50%" ("0.00%" when total is 0).
std::string percent(int64_t v, int64_t total);
// a + b, clamped to [INT64_MIN, INT64_MAX]: a capture file can hold any int64 values (a
// corrupt or hostile one too), and totals over them must be printed, not overflow.
int64_t saturating_add(int64_t a, int64_t b);

// Seconds (a double read from capture.json) as nanoseconds, clamped to the int64 range;
// NaN is 0. A plain cast of an out-of-range double is undefined behaviour.
int64_t seconds_to_ns(double seconds);

// The identity of the function a frame is in, for grouping: its display name and module.
std::string function_key(const Frame& f);

// A value in its unit, for people: nanoseconds -> "1.20s" / "35.00ms" / "12.50us" / "800ns",
// bytes -> "3.00MiB" / "12.00KiB" / "512B", count -> "1234", anything else -> "12 unit"; zero is
// "0" in every unit.
std::string format_value(int64_t v, const std::string& unit);

}  // namespace profctl::report_detail
