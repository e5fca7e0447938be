// The human report of one profile (<kind>.txt): top stacks and a flat top-functions table,
// in the manner of `go tool pprof -top`.
#pragma once

#include <cstddef>
#include <ostream>
#include <string>

#include "report/capture.h"

namespace profctl {

// The heap profile has a format of its own (report/heap_text.h, Go's debug=1 with a summary
// in comments), ranked by `sample_index` (empty: its default, inuse_space).
// Other profiles rank by the profile's main value, the last sample type (cpu/nanoseconds,
// inuse_space/bytes, delay/nanoseconds, ...). Writes the totals of every sample type, the
// top_n stacks (identical stacks merged) with every value and the main value's share, then
// the top_n functions by flat (leaf frame) and cum (anywhere in the stack, once per stack)
// value. Values are in human units (ns -> ms/s, bytes -> KiB/MiB, counts as numbers).
void write_profile_text(const Capture& capture, const std::string& kind, std::ostream& out,
                        size_t top_n, const std::string& sample_index = {});

}  // namespace profctl
