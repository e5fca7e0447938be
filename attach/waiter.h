// SPDX-License-Identifier: MIT
// Waiter: the one choke point for waiting on tracees (STYLE 5). Statuses are *peeked*
// (waitid WNOWAIT) and consumed only when the caller is done with them: a signal-delivery
// stop that is never consumed keeps its signal in the kernel, so if profctl dies (even by
// SIGKILL) before re-injecting it, the kernel delivers it when it detaches the thread —
// nothing profctl held is lost. Waiting is bounded by sigtimedwait on SIGCHLD (a ptrace
// stop notifies the tracer with SIGCHLD), so no process-wide timer or handler is needed.
#pragma once

#include <sys/types.h>
#include <sys/wait.h>

#include <chrono>
#include <optional>

#include "attach/wait_status.h"

namespace profctl {

class Waiter {
 public:
  struct Event {
    pid_t tid = 0;
    WaitStatus status;
    // Signal-delivery stops are left in the kernel: the caller resumes the thread with the
    // signal (which ends the stop) or calls consume(). Every other status is consumed
    // before next() returns it.
    bool pending_in_kernel = false;
  };

  // Blocks SIGCHLD in the calling thread (the one that waits): the signal must stay
  // pending for sigtimedwait rather than be discarded by its default action. cli blocks it
  // process-wide before any thread starts.
  Waiter();

  // The next status of any tracee or child (__WALL). Waits at most `timeout`; nullopt when
  // it elapsed, or there is nothing left to wait for.
  std::optional<Event> next(std::chrono::nanoseconds timeout);
  // The next status of `tid` only; statuses of others stay in the kernel for next().
  std::optional<Event> next_for(pid_t tid, std::chrono::nanoseconds timeout);
  // Reaps a status left in the kernel (a signal stop the caller holds on to). Its signal
  // is then profctl's to re-deliver.
  void consume(const Event& e);
  // Sleeps `slice`, then says whether a status may have arrived since the last call
  // (SIGCHLD came; it is taken). Not woken by each status that arrives meanwhile (a burst
  // of hundreds of stops, each waking the waiter, costs the stopping threads more than the
  // waiter's short sleep: bench/RESULTS.md), unless `wake`: then the first one ends it.
  bool nap(std::chrono::nanoseconds slice, bool wake = false);

  // Blocks SIGCHLD in the calling thread; call before starting threads that must inherit it.
  static void block_sigchld();

 private:
  std::optional<Event> wait_one(idtype_t which, pid_t id, std::chrono::nanoseconds timeout);
  std::optional<Event> peek(idtype_t which, pid_t id, bool* none_left);
};

}  // namespace profctl
