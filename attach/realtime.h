// SPDX-License-Identifier: MIT
// ScopedRealtime: raises profctl's calling thread to SCHED_FIFO 1 while it stops and
// resumes target threads, so that the target threads it wakes (to stop them, to resume
// them) do not preempt it half way, and a stopped thread's notification wakes it at once
// instead of after a busy thread's time slice. That thread never spins: it blocks in
// waitpid or sleeps, so it never takes a CPU away for long. SCHED_RESET_ON_FORK keeps it
// from leaking into anything profctl starts. Without CAP_SYS_NICE it does nothing.
// PROFCTL_NO_REALTIME=1 turns it off (for benchmarks comparing both).
#pragma once

#include <sched.h>

#include <cstdlib>

namespace profctl {

class ScopedRealtime {
 public:
  ScopedRealtime() {
    if (std::getenv("PROFCTL_NO_REALTIME") != nullptr) {
      return;
    }
    policy_ = sched_getscheduler(0);
    if (policy_ >= 0 && sched_getparam(0, &old_) == 0) {
      sched_param p{};
      p.sched_priority = 1;
      raised_ = sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &p) == 0;
    }
  }
  ~ScopedRealtime() {
    if (raised_) {
      sched_setscheduler(0, policy_, &old_);
    }
  }
  ScopedRealtime(const ScopedRealtime&) = delete;
  ScopedRealtime& operator=(const ScopedRealtime&) = delete;

 private:
  int policy_ = -1;
  sched_param old_{};
  bool raised_ = false;
};

}  // namespace profctl
