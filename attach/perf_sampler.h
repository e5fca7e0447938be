// SPDX-License-Identifier: MIT
// PerfSampler: the cpu profile's samples from the kernel's own sample records, the mechanism
// of `perf record --call-graph dwarf`. One task-clock perf event per target thread overflows
// every `period` of the thread's CPU time; at each overflow the kernel writes a record (the
// thread's user registers and a copy of the top of its user stack) into the event's mmap
// ring. Nothing stops the thread and no signal reaches it: the cost in the target is the
// kernel's copy, a few microseconds per sample. profctl drains the rings at its ticks.
//
// Why per-thread events with a ring each: an inherited event cannot be mmapped, and per-task
// events may share a ring only with events of the same task; perf's per-CPU rings need a
// (thread, CPU) event for every pair. A ring holds a few records; it is drained every tick,
// and a thread cannot overflow its CPU clock more than about once a tick.
//
// The records are the kernel's, read from memory only profctl maps; still every size in them
// is checked against the ring and the record before it is used.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "attach/snapshot.h"
#include "base/fd.h"
#include "base/result.h"

namespace profctl {

struct PerfSample {
  pid_t pid = 0;
  pid_t tid = 0;
  uint64_t time_ns = 0;  // CLOCK_MONOTONIC, when the clock overflowed
  // The thread's CPU time since its previous record (since the event was enabled, for the
  // first): the clock's own count, so a late overflow loses nothing.
  uint64_t cpu_ns = 0;
  Snapshot snap;  // regs and stack copy (pid, tid set; space left to the caller)
};

// Whether a thread is on a CPU (or waiting for one) or asleep, from the kernel's context
// switch records (PERF_RECORD_SWITCH) in its ring: what the wall profile needs to know of a
// thread at each tick without reading its /proc files (two reads per running thread per
// tick were most of profctl's CPU at 99 Hz).
struct RunState {
  bool known = false;     // a switch record was seen and none was lost since
  bool runnable = false;  // on a CPU, or taken off one while still runnable (preempted)
  uint64_t ins = 0;       // switch-ins so far: a change means the thread ran in between
};

class PerfSampler {
 public:
  // `stack_bytes`: user stack copied per sample (rounded to 8, at most the kernel's 65528).
  PerfSampler(uint64_t period_ns, uint32_t stack_bytes);
  ~PerfSampler();
  PerfSampler(const PerfSampler&) = delete;
  PerfSampler& operator=(const PerfSampler&) = delete;

  // Opens and maps the thread's event and enables it. An error when the kernel refuses
  // (perf_event_paranoid, seccomp, no CAP_PERFMON, locked-memory limits).
  Result<void> add(pid_t tid);
  // Drains the thread's ring into `fn`, then closes its event.
  void remove(pid_t tid, const std::function<void(PerfSample&&)>& fn);
  // Every record waiting in the thread's ring, oldest first. Returns how many samples.
  // `until_exec`: stops after the thread's exec (the records of its old image only).
  size_t drain(pid_t tid, const std::function<void(PerfSample&&)>& fn, bool until_exec = false);
  // Every ring.
  size_t drain_all(const std::function<void(PerfSample&&)>& fn);
  // Stops every event; their rings stay readable.
  void disable();
  // The thread's state as its drained records say (drain first). Unknown on kernels without
  // switch records (before Linux 4.3) and after a lost record, until the next switch.
  RunState run_state(pid_t tid) const;

  uint64_t period_ns() const { return period_ns_; }
  uint32_t stack_bytes() const { return stack_bytes_; }
  size_t threads() const { return rings_.size(); }
  bool has(pid_t tid) const { return rings_.count(tid) != 0; }
  // Samples the kernel could not write (ring full: profctl did not drain in time).
  uint64_t lost() const { return lost_; }
  // Records without user registers (the clock overflowed in a kernel thread context).
  uint64_t no_user_regs() const { return no_user_regs_; }
  // Records that failed a size check (never expected from the kernel).
  uint64_t malformed() const { return malformed_; }
  // Where executable mappings were made since the last call (PERF_RECORD_MMAP: a dlopen),
  // as {pid, start address}: a library can be read while the process lives even when no
  // sample's pc lands in it (its samples all in the vdso's clock_gettime, say).
  std::vector<std::pair<pid_t, uint64_t>> take_mapped() { return std::exchange(mapped_, {}); }

 private:
  struct Ring;
  size_t drain_ring(Ring& r, const std::function<void(PerfSample&&)>& fn, bool until_exec = false);

  uint64_t period_ns_;
  uint32_t stack_bytes_;
  size_t ring_data_bytes_;
  std::map<pid_t, std::unique_ptr<Ring>> rings_;
  uint64_t lost_ = 0;
  uint64_t no_user_regs_ = 0;
  uint64_t malformed_ = 0;
  std::vector<std::pair<pid_t, uint64_t>> mapped_;
};

}  // namespace profctl
