// SPDX-License-Identifier: MIT
// Assembly: what a ProfileSource reads and writes when it adds its part to the Capture —
// the finished session (PipelineResult), the settings, the symbolizers (one per followed
// address space), the last stopped world unwound once, the lock namer, and the capture's
// warnings. Built by assemble_capture(); the sources only see it through add_to().
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "capture/capture_assembly.h"
#include "capture/capture_pipeline.h"
#include "capture/lock_names.h"
#include "capture/profile_source.h"
#include "report/capture.h"
#include "symbolize/symbolizer.h"

namespace profctl {

class Assembly {
 public:
  Assembly(Capture& c, PipelineResult& run, const CaptureSettings& settings,
           const SymbolizeOptions& symbolize);
  ~Assembly();
  Assembly(const Assembly&) = delete;
  Assembly& operator=(const Assembly&) = delete;

  Capture& capture() { return capture_; }
  PipelineResult& run() { return run_; }
  const CaptureSettings& settings() const { return settings_; }
  // The target's symbolizer, and the one of an address space (Snapshot::space): a followed
  // image's pcs are named from its own modules, the target's (and a forked child's, which
  // shares them until it execs) from the target's.
  Symbolizer& symbolizer() { return sym_; }
  Symbolizer& symbolizer_for(uint32_t space);
  // The last stopped world, unwound (null: the capture ended without one).
  const UnwoundWorld* world() const { return world_ ? &*world_ : nullptr; }
  void set_world(UnwoundWorld w) { world_ = std::move(w); }

  // Adds a profile, symbolized, each row with its own address space's symbolizer.
  void add_profile(const std::string& kind, const ProfileData& data, const StackTable& stacks);
  // Adds the sample collector's profile of that kind (cpu, wall, threadcreate), if it has one.
  void add_collector_profile(const std::string& kind);
  // Names the "lock" labels of a profile already added (block, mutex, mutex_holders).
  void name_locks(const std::string& kind);
  void warn(std::string w) { capture_.warnings.push_back(std::move(w)); }
  // What a profile already added lost (ProbeLosses): its loss, its `dropped` (= lost()),
  // and, with `warn_if_lossy`, the capture's warning that says so, all from `loss`.
  void set_loss(const std::string& kind, const ProfileLoss& loss, bool warn_if_lossy = true);

 private:
  Capture& capture_;
  PipelineResult& run_;
  const CaptureSettings& settings_;
  SymbolizeOptions symbolize_;
  std::shared_ptr<SharedFrames> shared_frames_;  // every space's symbolizer shares it
  Symbolizer sym_;
  std::map<uint32_t, std::unique_ptr<Symbolizer>> space_syms_;
  std::optional<UnwoundWorld> world_;
  std::unique_ptr<LockNamer> locks_;  // made at the first name_locks()
};

}  // namespace profctl
