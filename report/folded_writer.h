// Folded stacks ("root;...;leaf value") for flame graph tools (flamegraph.pl, speedscope,
// inferno).
#pragma once

#include <cstddef>
#include <ostream>
#include <string>

#include "report/capture.h"

namespace profctl {

// One line per distinct stack of profile `kind`, root first, inlined calls included as
// their own frames; a frame is its function, else "module+0xoff" (';' in a name becomes
// ':'). Identical stacks are merged and their values[value_index] summed. Lines are sorted
// by stack for determinism. Writes nothing when the capture has no such profile or the
// index is past the profile's sample types.
void write_folded(const Capture& capture, const std::string& kind, std::ostream& out,
                  size_t value_index = 0);

}  // namespace profctl
