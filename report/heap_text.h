// SPDX-License-Identifier: MIT
// The heap profile for people (heap.txt), in the spirit of Go's debug=1 heap profile.
#pragma once

#include <cstddef>
#include <ostream>
#include <string>

#include "report/capture.h"

namespace profctl {

struct HeapTextOptions {
  size_t top_n = 10;         // stacks in the top, peak and long-lived sections
  std::string sample_index;  // ranks the top stacks; empty: the default (inuse_space)
  bool records = true;       // the Go debug=1 records of every stack (false: summary only)
};

// Writes the "heap" profile of `capture`:
//
//   heap profile: INUSE_OBJS: INUSE_BYTES [ALLOC_OBJS: ALLOC_BYTES] @ heap/2*RATE
//   # ... summary: scaled totals, counters, what is not charged, top stacks, peak,
//   # ... long-lived allocations
//   N: B [N: B] @ 0xpc 0xpc ...
//   #	0xpc	function	file:line
//
//   --- Memory map: ---
//   0xstart-0xlimit r-xp /path (@offset) build-id
//
// The header, the records and the memory map are Go's legacy text format (raw, unscaled
// counts of the sampled allocations; Go writes twice the rate after "heap/", and pprof
// halves it), and every other line is a '#' comment, so that `go tool pprof heap.txt` reads
// the numbers as Go's own text heap profile. The file is for people first: pprof ignores the
// comments, so it names a record's addresses only from the binaries (by module where it
// cannot); heap.pb.gz is the file for pprof. Frames carry no function entry, so a record's
// frame line gives the function without Go's "+0xoff", and "module+0xoff" when the function
// is unknown.
void write_heap_text(const Capture& capture, std::ostream& out, const HeapTextOptions& opts);

}  // namespace profctl
