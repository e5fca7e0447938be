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
      up_ = raised_;
    }
  }
  ~ScopedRealtime() {
    if (raised_ && up_) {
      sched_setscheduler(0, policy_, &old_);
    }
  }
  // Back to the old policy for a while (up=false) and up again, where it was raised at
  // all. Why: a FIFO thread that sleeps is woken on its own CPU, which on a VM may be a
  // halted vCPU (an interrupt and a VM entry: tens of microseconds); a normal one is woken
  // where the thread that stopped ran. While a process's statuses come in a burst (its
  // fork, first stop, exec, exit: a vfork parent waits for them) the tracer waits at the
  // normal policy (bench/TREE.md).
  void set_up(bool up) {
    if (!raised_ || up == up_) {
      return;
    }
    sched_param p{};
    p.sched_priority = 1;
    const int rc = up ? sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &p)
                      : sched_setscheduler(0, policy_, &old_);
    if (rc == 0) {
      up_ = up;
    }
  }
  ScopedRealtime(const ScopedRealtime&) = delete;
  ScopedRealtime& operator=(const ScopedRealtime&) = delete;
  bool raised() const { return raised_; }

 private:
  int policy_ = -1;
  sched_param old_{};
  bool raised_ = false;
  bool up_ = false;  // at FIFO now
};

}  // namespace profctl
