// SPDX-License-Identifier: MIT
// Turning what attach/ and profile/ collected into a symbolized Capture: unwind the
// stop-the-world snapshots (after the target was resumed), symbolize each unique pc once,
// fill the thread table and the profiles.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>

#include "attach/traced_process.h"
#include "profile/collector.h"
#include "profile/heap_profile.h"
#include "profile/thread_groups.h"
#include "report/capture.h"
#include "symbolize/symbolizer.h"
#include "unwind/target_dwfl.h"
#include "unwind/unwinder.h"

namespace profctl {

struct CaptureHeader {
  pid_t pid = 0;
  std::string exe;
  std::vector<std::string> cmdline;
  std::string start;
  std::map<std::string, std::string> options;
};

// A Capture with target, window start, options, tool version and the module list.
Capture new_capture(const CaptureHeader& h, const TargetDwfl& dwfl);

// Symbolizes one stack, inlined frames expanded (as the Symbolizer's options say).
std::vector<Frame> symbolize_stack(const std::vector<UnwoundFrame>& stack, Symbolizer& sym);

// A stopped world's stacks, unwound once: for the thread table and the threads profile.
struct UnwoundWorld {
  StackTable table;
  std::vector<ThreadStackRef> refs;  // one per thread with a stack, in the table's order
};

// Fills c.threads from a stopped-world capture, and c.pause from its timings.
// `waited_ns`, when given, says how long a thread (by its snapshot) had been in a probed
// wait at the stop (nullopt: not waiting).
using WaitedFn = std::function<std::optional<uint64_t>(const Snapshot&)>;
UnwoundWorld add_thread_table(Capture& c, const WorldCapture& world, Unwinder& unwinder,
                              Symbolizer& sym, const WaitedFn& waited_ns = {});
// The "threads" profile: identical stacks grouped, with their tids.
void add_threads_profile(Capture& c, const UnwoundWorld& world, Symbolizer& sym);
// Both: the thread table and, with `group`, the threads profile.
void add_world(Capture& c, const WorldCapture& world, Unwinder& unwinder, Symbolizer& sym,
               bool group, const WaitedFn& waited_ns = {});

// Adds one profile, symbolized (each stack once).
void add_profile(Capture& c, const std::string& kind, const ProfileData& data,
                 const StackTable& stacks, Symbolizer& sym);
// The symbolizer of an address space (ProfileData::Row::space): with child processes
// followed, each image's pcs are named from its own modules.
using SymbolizerFor = std::function<Symbolizer&(uint32_t space)>;
void add_profile(Capture& c, const std::string& kind, const ProfileData& data,
                 const StackTable& stacks, const SymbolizerFor& sym_for);

// Adds the heap profile from HeapTracker::result(): Go's four sample types (scaled, with
// the raw values beside them), default_sample_type inuse_space, the peak and long-lived
// sections and the counters; each stack symbolized once. `stacks` is the table the
// tracker's StackIds come from.
void add_heap_profile(Capture& c, const HeapResult& heap, const StackTable& stacks,
                      const SymbolizerFor& sym_for);

}  // namespace profctl
