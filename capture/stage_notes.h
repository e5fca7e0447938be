// SPDX-License-Identifier: MIT
// The capture's warnings, each from the stage whose result it reads: the sampling session,
// the sample collector, the process tree, the probes. Phrased for the report (capture.json
// "warnings", the notes profctl prints): what was lost or changed, and why.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "attach/process_tree.h"
#include "attach/sampling_session.h"
#include "capture/probe_capture.h"
#include "capture/profile_source.h"
#include "profile/collector.h"

namespace profctl {

struct SessionNoteContext {
  double rate_hz = 99;
  bool launch = false;      // run: the program is profctl's
  std::string stop_signal;  // run: the signal that asked the capture to stop ("": none)
  std::chrono::milliseconds stop_grace{0};
};
std::vector<std::string> session_notes(const SessionResult& res, const SessionPlan& plan,
                                       const SessionNoteContext& ctx);
std::vector<std::string> collector_notes(const CollectorStats& stats);
std::vector<std::string> tree_notes(const TreeStats& tree, size_t max_processes);
// After ProbeCapture::finish(): records dropped on the way (ring, pointer table, unwinding)
// and the probes' own notes.
std::vector<std::string> probe_notes(ProbeCapture& probes);

// The session's timings and counters, for `-v` (spdlog, never the report).
void log_session_stats(const SessionResult& res, const CollectorStats& stats);

}  // namespace profctl
