// SPDX-License-Identifier: MIT
// SampleSink: where a sampling session delivers what it saw. attach/ produces snapshots;
// the sink (profile/) unwinds and aggregates them, off the stop path.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "attach/snapshot.h"

namespace profctl {

struct ThreadSample {
  pid_t tid = 0;
  std::string name;
  char state = '?';      // from /proc stat, read before the stop
  uint64_t time_ns = 0;  // CLOCK_MONOTONIC
  uint64_t cpu_ns = 0;   // CPU time attributed to this stack (only when state is R)
  uint64_t wall_ns = 0;  // wall time this sample stands for (the sampling interval)
  uint64_t ticks = 1;    // how many ticks it stands for (reused samples are merged)
  // The thread's registers and stack. nullopt: the thread has not run since its last
  // sample (its schedstat run time is unchanged), so it was not stopped: same stack.
  std::optional<Snapshot> snap;
  // Which profiles it is a sample of: a tick's sample is the wall profile's (and the cpu
  // profile's when no CPU timer runs); a CPU timer's sample is the cpu profile's only.
  bool for_cpu = true;
  bool for_wall = true;
  // A CPU clock's sample (a record or a timer signal): one cpu sample, whatever `ticks` the
  // wall profile counts for it.
  bool from_clock = false;
  pid_t pid = 0;        // its process (thread group)
  std::string process;  // the process's comm
  uint32_t space = 0;   // its address space (Snapshot::space), also for reused samples
};

struct ThreadCreation {
  pid_t creator = 0;
  std::string creator_name;
  pid_t child = 0;
  uint64_t time_ns = 0;
  Snapshot snap;        // the creator, stopped at its clone()
  pid_t pid = 0;        // the creator's process
  std::string process;  // its comm
};

class SampleSink {
 public:
  virtual ~SampleSink() = default;
  virtual void on_sample(ThreadSample&& s) = 0;
  virtual void on_thread_created(ThreadCreation&& c) = 0;
  virtual void on_thread_exited(pid_t /*tid*/) {}
};

}  // namespace profctl
