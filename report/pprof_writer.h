// pprof protobuf writer (<kind>.pb.gz), read by `go tool pprof`, Pyroscope, Parca, speedscope.
#pragma once

#include <ostream>
#include <string>

#include "base/result.h"
#include "report/capture.h"

namespace profctl {

// Writes profile `kind` of `capture` as a gzip-compressed perftools.profiles.Profile
// (report/profile.proto):
//  - one Mapping per capture.modules entry (the target's exe first, as pprof takes
//    mapping 1 for the main binary), with has_functions etc. set only when every location
//    in it was symbolized, so that pprof can symbolize the rest itself from the binaries;
//  - one Location per distinct (pc, module), mapping_id by address range (0 when no module
//    covers the pc), whose Lines are the inlined calls at that pc, innermost first and the
//    real caller last (Go's order); frames with an unknown function get no Line;
//  - one Function per distinct (name, file);
//  - sample labels from Sample.labels: "tid" as a numeric label, the rest as strings;
//  - period_type/period, time_nanos (window.start), duration_nanos, and comments for
//    dropped events and warnings.
// Fails when the capture has no such profile or the stream cannot be written.
Result<void> write_pprof(const Capture& capture, const std::string& kind, std::ostream& out);

}  // namespace profctl
