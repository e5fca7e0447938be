// SPDX-License-Identifier: MIT
// pprof protobuf writer (<kind>.pb.gz), read by `go tool pprof`, Pyroscope, Parca, speedscope.
#pragma once

#include <ostream>
#include <string>

#include "base/result.h"
#include "report/capture.h"

namespace profctl {

// Writes profile `kind` of `capture` as a gzip-compressed perftools.profiles.Profile
// (report/profile.proto):
//  - one Mapping per executable segment of each capture.modules entry, with the segment's
//    true start, limit and file offset and the module's build id (the target's exe first, as
//    pprof takes mapping 1 for the main binary); a module without recorded segments (older
//    captures) gets one Mapping for its whole range. has_functions / has_filenames /
//    has_line_numbers / has_inline_frames are set exactly when every location in the mapping
//    carries them;
//  - one Location per distinct (pc, module), mapping_id by address range (0 when no mapping
//    covers the pc), whose Lines are the inlined calls at that pc, innermost first and the
//    real caller last (Go's order); every frame has a Line, an unnamed function under its
//    report name ("libfoo.so+0x15ae0", report_detail::frame_name);
//  - one Function per distinct (name, file);
//  - sample labels from Sample.labels: "tid" as a numeric label, the rest as strings;
//  - period_type/period, time_nanos (window.start), duration_nanos, and comments for
//    dropped events and warnings.
// Fails when the capture has no such profile or the stream cannot be written.
Result<void> write_pprof(const Capture& capture, const std::string& kind, std::ostream& out);

}  // namespace profctl
