// SPDX-License-Identifier: MIT
// A finished session (run_pipeline) made into a symbolized Capture: the header and
// modules, the thread table from the last stopped world, each source's profiles, and the
// warnings each stage returned. cli/ only writes what this returns.
#pragma once

#include <chrono>
#include <string>

#include "capture/capture_assembly.h"
#include "capture/capture_pipeline.h"
#include "capture/profile_source.h"
#include "report/capture.h"
#include "symbolize/symbolizer.h"

namespace profctl {

struct AssembleOptions {
  CaptureHeader header;  // target, start, options (the sources' own are added)
  SymbolizeOptions symbolize;
  CaptureSettings settings;
  bool launch = false;
  size_t max_processes = 64;  // for the note on children not followed
  std::string stop_signal;    // run: the signal that asked the capture to stop ("": none)
  std::chrono::milliseconds stop_grace{0};
};

// Symbolizes on the calling thread (which owns run.dwfl's Dwfl).
Capture assemble_capture(PipelineResult& run, const AssembleOptions& o);

// The header's options of a capture request: the common ones (rate, duration, ...) are the
// caller's; each source adds its own settings.
void describe_sources(const std::vector<const ProfileSource*>& sources, const CaptureSettings& s,
                      std::map<std::string, std::string>& options);

}  // namespace profctl
