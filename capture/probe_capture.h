// SPDX-License-Identifier: MIT
// ProbeCapture: the probe-driven profiles of one capture (heap, block, mutex), wired end to
// end: the probes installed in the target (probe/Probes), a thread that drains their ring
// from profctl's own mapping (never stopping the target), and the collectors that unwind
// and aggregate the records (profile/HeapCollector, profile/WaitCollector). attach and run
// share it.
#pragma once

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "attach/traced_process.h"
#include "base/fd.h"
#include "base/result.h"
#include "capture/probe_tables.h"
#include "probe/probes.h"
#include "probe/ring_reader.h"
#include "probe/tsc_clock.h"
#include "profile/heap_collector.h"
#include "profile/wait_collector.h"
#include "report/capture.h"

namespace profctl {

struct ProbeCaptureOptions {
  bool heap = false;
  bool block = false;
  bool mutex = false;
  int64_t mem_rate = 512 * 1024;
  uint64_t block_rate_ns = 0;   // Go's SetBlockProfileRate: waits >= this always recorded
  uint64_t mutex_fraction = 0;  // Go's SetMutexProfileFraction: 1 in N
  uint32_t stack_bytes = 16 * 1024;
  uint64_t ring_bytes = probe::kDefaultRingBytes;  // rounded up to a power of two
  // A breakpoint (int3) where no jump fits: only for a program profctl started, which dies
  // with profctl anyway; in a process profctl attached to, a breakpoint left by a killed
  // profctl would kill it at the next call (SIGTRAP with no tracer).
  bool allow_breakpoints = false;
  // Child processes the process tree follows keep their inherited probes, with a ring of
  // their own (Probes::adopt); their records are labelled with their pid. Off: they are
  // cleaned of the probes before they run.
  bool follow_children = false;
  // A full ring makes the target's recording thread wait for profctl to read (nothing is
  // lost while profctl lives); false: the record is dropped and counted (--probe-lossy).
  bool ring_wait = true;
  // How long the target waits for a profctl that stopped draining before it drops the
  // record and silences the probes (profctl SIGKILLed: the target goes on after this).
  std::chrono::milliseconds liveness{100};
  // Walk recorded stacks in the target with compiled CFI tables (false: copy them).
  bool walk_in_target = true;
};

// What each probe profile lost, counted once at finish() from the ring's drops by profile
// (probe_counters), the collectors' queue drops and their bounds: the one source every
// output's loss numbers come from (the sources copy them into the Capture).
struct ProbeLosses {
  ProfileLoss heap;   // allocations: recorded = sampled_allocs
  ProfileLoss block;  // waits chosen for block
  ProfileLoss mutex;  // lock waits chosen for mutex (mutex_holders is charged from them)
};

struct ProbeCaptureStats {
  uint64_t records = 0;         // ring records handed to the collectors
  uint64_t ring_dropped = 0;    // records the target could not write (ring full)
  uint64_t table_dropped = 0;   // sampled pointers the target could not track
  uint64_t thread_dropped = 0;  // events of threads without a slot (table full)
  uint64_t foreign = 0;         // records of other processes (forked children)
  uint64_t waits_seen = 0;      // waits the probes timed
  uint64_t waits_recorded = 0;  // waits the rates chose and the ring took
};

class ProbeCapture {
 public:
  using UnwinderFactory = std::function<std::unique_ptr<Unwinder>()>;
  // Installs the probes (stopping the world once) and starts draining.
  // Each collector unwinds on a worker thread of its own, with the unwinder its factory
  // makes there (one libdwfl Dwfl per thread).
  static Result<std::unique_ptr<ProbeCapture>> start(TracedProcess& tp,
                                                     const ProbeCaptureOptions& options,
                                                     UnwinderFactory heap_unwinder,
                                                     UnwinderFactory wait_unwinder);
  ~ProbeCapture();
  ProbeCapture(const ProbeCapture&) = delete;
  ProbeCapture& operator=(const ProbeCapture&) = delete;

  // A child process the tree follows, held at its first stop (ProcessTree::set_followed):
  // if its probes were adopted, they observe it from now on and their ring is drained.
  void followed(TracedProcess& child);
  // A followed child that exec'd, held at its exec event (ProcessTree::set_child_exec): runs
  // it to where ld.so has its new image's libraries loaded (before their constructors) and
  // installs the probes there, with a ring of its own. True when they are in: the new
  // image's space should then be announced (its modules read for unwinding).
  bool child_exec(TracedProcess& child);
  // Child processes whose probes were adopted or installed after an exec.
  size_t children_probed() const;

  // Call after the target is detached (the probes removed): drains what is left in the
  // ring, stops the drain thread and the collectors.
  void finish();

  // Live counters for the status line (any thread): records read, and records lost so far
  // (the ring's drops and the collectors' queues'; the final per-profile counts: losses()).
  uint64_t records() const { return records_.load(std::memory_order_relaxed); }
  uint64_t dropped() const;
  // After finish().
  const ProbeLosses& losses() const { return losses_; }

  HeapCollector* heap() { return heap_.get(); }
  WaitCollector* waits() { return waits_.get(); }
  // The probes' notes (what is probed and how) and, after finish(), what the capture
  // dropped or refused to keep: a corrupt ring, stacks cut to the budget, bounds reached.
  std::vector<std::string> notes() const;
  // After detach: what of the probes could not be taken out of the target (exact
  // addresses and sizes); empty when the target is as it was.
  const std::vector<std::string>& left() const { return probes_->left(); }
  ProbeCaptureStats stats() const;
  uint64_t now_ns() const;  // on the records' clock (CLOCK_MONOTONIC)
  bool gone_by_exec() const { return probes_->gone_by_exec(); }
  // A target TSC value on the records' clock (CLOCK_MONOTONIC ns).
  uint64_t tsc_to_ns(uint64_t tsc) const { return clock_.to_monotonic_ns(tsc); }

 private:
  // A followed child's adopted probes and their ring.
  struct ChildRing {
    pid_t pid = 0;
    uint64_t tag = 0;  // or'ed into its pointers: two processes can hand out the same address
    std::string comm;
    std::shared_ptr<probe::Probes> probes;
    std::unique_ptr<probe::RingReader> reader;
    uint32_t space = 0;  // the image its records' stacks are in: 0 the target's (a fork)
    Fd pidfd;            // readable once the child has exited: its ring is then drained and retired
    std::unique_ptr<ProbeTables> tables;  // its modules' unwind tables in its area
    bool tables_tried = false;            // the first placement was attempted
  };
  // Followed children probed at once at most: each holds a memfd and its ring's pages in
  // profctl until it exits. Past it, a child is cleaned of the probes (said once).
  static constexpr size_t kMaxChildRings = 128;
  ProbeCapture() = default;
  void drain_loop();
  size_t drain_once();
  size_t drain_ring(probe::RingReader& reader, pid_t pid, uint64_t tag, uint32_t space);
  void adopted(std::shared_ptr<probe::Probes> child);
  // Hands `child` its process's probes: the children it forks are adopted (when followed).
  void wire(probe::Probes& probes);
  void note_child(std::string line);  // a child not probed: noted, up to kMaxChildNotes
  // Starts draining a followed child's probes (registered on `child`).
  void add_ring(TracedProcess& child, std::shared_ptr<probe::Probes> probes, uint32_t space);
  // Every ring's counters, summed (the root's and each child's).
  probe::ProbeCounters counters() const;
  void retire_exited();
  // Every area's heartbeat, its stall (re-enabled and counted), and, every so often, its
  // modules' tables (dlopen).
  void keep_alive(bool tables_too);
  // Queues a collector event: batched, flushed every kBatch events and at the end of each
  // ring's drain; without loss (ring_wait) or droppably.
  void heap_added();  // after an event was built at the end of heap_batch_
  void push_wait(WaitEvent&& e);
  void flush();
  static constexpr size_t kBatch = 512;
  std::vector<AllocEvent> heap_batch_;  // the drain thread's
  std::vector<WaitEvent> wait_batch_;

  std::shared_ptr<probe::Probes> probes_;
  std::unique_ptr<probe::RingReader> reader_;
  std::unique_ptr<HeapCollector> heap_;
  std::unique_ptr<WaitCollector> waits_;
  probe::TscClock clock_;
  ProbeCaptureOptions options_;
  probe::ProbeOptions probe_options_;  // the root's; a child's new image gets child = true
  pid_t pid_ = 0;
  std::string comm_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> records_{0};
  std::atomic<uint64_t> walked_{0};   // records whose stack the target walked
  std::atomic<uint64_t> ids_new_{0};  // of them, defining their stack id
  std::atomic<uint64_t> copied_{0};   // records with a stack copy (profctl unwinds them)
  std::thread drainer_;
  // Refreshes every area's heartbeat every few milliseconds while the capture runs, apart
  // from the drain (which may be busy for longer: placing tables, a slow collector): the
  // target waits for room only while profctl lives.
  std::thread heartbeat_;
  std::atomic<bool> beating_{false};
  void heartbeat_loop();
  bool finished_ = false;
  bool ring_abandoned_ = false;     // the reader gave up: the probes were disabled
  std::vector<std::string> notes_;  // added at finish()
  ProbeLosses losses_;              // set at finish()
  // Adopted by the tracing thread (pending until the tree follows the child), drained by
  // the drain thread; retired by it once the child has exited and its ring is empty.
  mutable std::mutex children_mu_;
  std::map<pid_t, std::shared_ptr<probe::Probes>> pending_;
  std::vector<std::unique_ptr<ChildRing>> children_;
  size_t children_total_ = 0;                                // ever probed
  std::map<uint64_t, std::pair<pid_t, std::string>> names_;  // tag >> 48 -> pid, comm
  bool children_capped_ = false;             // kMaxChildRings was reached (noted at finish)
  std::vector<std::string> notes_children_;  // child processes not probed, and why
  size_t child_notes_ = 0;
  static constexpr size_t kMaxChildNotes = 8;
  probe::ProbeCounters retired_;         // the counters of the retired rings, summed
  std::unique_ptr<ProbeTables> tables_;  // the root's modules' unwind tables
  std::atomic<uint64_t> stalls_{0};      // times the target found profctl gone and fell silent
  std::chrono::steady_clock::time_point tables_at_{};  // last look at the modules
  std::atomic<size_t> live_rings_{0};                  // children_ plus pending_, for may_adopt
};

}  // namespace profctl
