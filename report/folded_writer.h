// SPDX-License-Identifier: MIT
// Folded stacks ("root;...;leaf value") for flame graph tools (flamegraph.pl, speedscope,
// inferno).
#pragma once

#include <cstddef>
#include <ostream>
#include <string>

#include "report/capture.h"

namespace profctl {

// One line per distinct stack of profile `kind`, root first, inlined calls included as
// their own frames; a frame is its function (report_detail::frame_name: an unnamed function
// is "libfoo.so+0x<its start>"), never a pc, and with `lines` its "file:line" after a space
// (';' in a name becomes ':'). Stacks with the same names are merged and their
// values[value_index] summed. Lines are sorted by stack for determinism. Writes nothing when
// the capture has no such profile or the index is past the profile's sample types.
void write_folded(const Capture& capture, const std::string& kind, std::ostream& out,
                  size_t value_index = 0, bool lines = false);

}  // namespace profctl
