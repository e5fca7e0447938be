// SPDX-License-Identifier: MIT
// The human report of one profile (<kind>.txt): top stacks and a flat top-functions table,
// in the manner of `go tool pprof -top`.
#pragma once

#include <cstddef>
#include <ostream>
#include <string>

#include "report/capture.h"

namespace profctl {

struct TextOptions {
  size_t top_n = 10;   // stacks and functions listed
  bool lines = false;  // --lines: group by function and file:line rather than by function
  // The heap profile's --sample-index: the sample type its text ranks by and its folded
  // values carry (empty: the profile's default, inuse_space). Other profiles ignore it.
  std::string sample_index;
};

// The identity of a frame in the text and folded reports: its function (report_detail::
// function_key: name and module, inlined frames being frames of their own), and with `lines`
// its file:line. Never the pc: every pc of a function is one row, as in `perf report` and
// `go tool pprof -top`; --lines is pprof's -lines.
std::string frame_identity(const Frame& f, bool lines);

// Ranks by the profile's main value, the last sample type (cpu/nanoseconds,
// inuse_space/bytes, delay/nanoseconds, ...). Writes the totals of every sample type, the
// top_n stacks (stacks with the same frame identities merged) with every value and the main
// value's share, then the top_n functions (with `lines`: function and file:line) by flat
// (innermost frame) and cum (anywhere in the stack, once per stack) value. Values are in
// human units (ns -> ms/s, bytes -> KiB/MiB, counts as numbers).
void write_profile_text(const Capture& capture, const std::string& kind, std::ostream& out,
                        const TextOptions& opts);

}  // namespace profctl
