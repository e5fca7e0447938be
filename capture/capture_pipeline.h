// SPDX-License-Identifier: MIT
// The capture pipeline that `attach` and `run` share, from a seized target to everything a
// report is assembled from: the modules (TargetDwfl), the sampling session and its
// collector, the probes (heap, block, mutex) and their collectors, the last stopped world,
// and the detach that restores the target. cli/ parses options, seizes or launches the
// target, then symbolizes and writes what this returns.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "attach/process_tree.h"
#include "attach/sampling_session.h"
#include "attach/traced_process.h"
#include "capture/probe_capture.h"
#include "capture/profile_source.h"
#include "profile/collector.h"
#include "unwind/space_unwinder.h"
#include "unwind/target_dwfl.h"

namespace profctl {

struct PipelineRequest {
  bool launch = false;  // a program profctl started, held at its exec
  // The profile kinds (capture/source_registry.h); their plans say what the session runs.
  std::vector<const ProfileSource*> sources;
  CaptureSettings settings;
  std::optional<double> duration_s;  // nullopt: until `stop`
  size_t stack_bytes = 8u << 20;
  DwflOptions dwfl;
  TreeOptions tree;  // child processes: followed (sampled) or only cleaned
  // How long after `stop` a launched program may take to exit before the capture ends
  // without it (SessionOptions::stop_grace); 0 for attach.
  std::chrono::milliseconds stop_grace{0};
  // The live status line (about 4 times a second).
  struct Live {
    SessionStatus session;
    const ProbeCapture* probes = nullptr;  // null without probes
    std::string hottest;                   // the function with the most cpu so far ("": none)
    double hottest_share = 0;              // its share of the cpu sampled so far
  };
  std::function<void(const Live&)> on_status;
  // Called just before a launched program is let run (its pid: forward signals to it).
  std::function<void(pid_t)> on_start;
  // After the sampling window: what the capture is busy with, for a progress line (the
  // capture's own stop has been asked for by then).
  std::function<void(const std::string&)> on_phase;
};

struct PipelineResult {
  // The request's sources, less those whose engine could not be started (the probes).
  std::vector<const ProfileSource*> sources;
  SessionPlan plan;                  // what the session ran for them
  std::unique_ptr<TargetDwfl> dwfl;  // the target's modules, for symbolizing
  // Followed child processes: each address space's modules (Snapshot::space), for
  // symbolizing; the target's own space is `dwfl`. (The collectors' workers unwound with
  // Dwfls of their own, released with their threads.)
  std::map<uint32_t, std::unique_ptr<TargetDwfl>> spaces;
  uint32_t root_space = 0;
  TreeStats tree;
  std::unique_ptr<Collector> collector;
  std::unique_ptr<ProbeCapture> probes;  // null without probe kinds (or when unavailable)
  SessionResult session;
  std::optional<WorldCapture> world;  // the last stopped world (none after exit or exec)
  uint64_t world_ns = 0;              // when it was taken, on the probes' clock
  uint64_t probes_end_ns = 0;         // when the probes were removed, on the same clock
  uint64_t left_traced = 0;  // threads and processes that never stopped, so were not detached
  std::vector<std::string> warnings;  // for the report
};

// The union of the sources' plans: what the session runs for them.
SessionPlan plan_session(const std::vector<const ProfileSource*>& sources,
                         const CaptureSettings& settings);

// Whether the target's new processes must be seized at birth (TracedProcess::seize and
// launch, `trace_forks`): to be followed, or to be cleaned of the probes they inherit.
// Otherwise each would cost its creator three stops for nothing. Needs req.sources,
// req.settings and req.tree.follow.
bool seizes_new_processes(const PipelineRequest& req);

// Runs the capture on `tp` (seized, or launched and held at its exec) until the duration,
// `stop`, the target's exit or exec; detaches (the probes removed) and finishes every
// collector. Throws UserError(kTargetGone) when the target's modules cannot be read, or no
// requested profile can be set up.
PipelineResult run_pipeline(std::unique_ptr<TracedProcess> tp, const PipelineRequest& req,
                            const std::atomic<bool>& stop);

}  // namespace profctl
