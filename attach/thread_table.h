// SPDX-License-Identifier: MIT
// ThreadTable: the one record of every traced thread's ptrace state, one explicit state
// per thread, changed only through the table's named transitions: apply() (a wait status)
// and the bookkeeping of what TracedProcess does (resumed, interrupted, a signal that was
// profctl's own, a sample asked for and taken). Threads are read through const pointers
// only. Pure logic: no ptrace call is made here, so every transition is unit-tested.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "attach/wait_status.h"

namespace profctl {

enum class TState : uint8_t {
  kNew,          // seized at birth (its creator's clone event was seen): first stop to come
  kRunning,      // resumed by us, or seized while running
  kInterrupted,  // PTRACE_INTERRUPT sent; its stop has not arrived yet
  kStopped,      // in a ptrace-stop that is ours to end
  kListening,    // in group-stop, resumed with PTRACE_LISTEN: stopped until SIGCONT
  kExiting,      // ptrace said ESRCH: its exit status is on its way
};

const char* tstate_name(TState s);

struct TracedThread {
  TState state = TState::kRunning;
  // The current (or last) stop is a group-stop: resuming without a signal must use
  // PTRACE_LISTEN so job control keeps it stopped. Any other stop clears it (a SIGCONT
  // ends a listening group-stop with an event stop).
  bool group_stop = false;
  int pending_signal = 0;            // to re-deliver at the next resume
  bool signal_in_kernel = false;     // pending_signal is still the kernel's (not consumed)
  uint64_t sample_requested_ns = 0;  // nonzero: a sample of this thread was asked for
  bool own_signal_stop = false;      // stopped by a signal of profctl's own (a CPU timer)
};

// A process (not a thread) that a traced thread created: fork, vfork or clone without
// CLONE_THREAD. The kernel seized it at birth; it must be dealt with (cleaned of patches,
// detached) once both its creator's event and its own first stop have arrived.
struct ChildProcess {
  pid_t pid = 0;
  pid_t parent_tid = 0;  // 0 until the creator's event arrives
  int event = 0;         // PTRACE_EVENT_FORK / _VFORK / _CLONE (0: not yet known)
  bool first_stop = false;
};

// What one wait status meant, for the code that acts on it.
struct Transition {
  enum class What {
    kNotOurs,      // no traced thread and not in our thread group (see ThreadTable::apply)
    kStopped,      // interrupt / event stop (a new thread's first stop included)
    kGroupStop,    // job-control stop
    kSignal,       // signal-delivery stop: `signal` for the target
    kPtraceEvent,  // clone/fork/vfork/exec/exit event stop: `event`
    kExited,       // the thread is gone (removed from the table)
  };
  What what = What::kNotOurs;
  pid_t tid = 0;
  TState before = TState::kRunning;
  int signal = 0;
  int event = 0;
  bool first_stop = false;  // the first stop of a thread seized at birth
};

class ThreadTable {
 public:
  // `remember_gone`: how many exited tids are remembered, so that a late clone event of an
  // already exited thread never brings it back (bounded: tids are reused eventually).
  explicit ThreadTable(size_t remember_gone = 65536) : gone_cap_(remember_gone) {}

  // Adds a thread seized by PTRACE_SEIZE (running) — or seized at birth (kNew).
  void add(pid_t tid, TState s);
  // Applies a wait status of `tid`. `same_group` tells whether an unknown tid belongs to
  // the traced thread group (the caller reads /proc; nullopt: unknown).
  Transition apply(pid_t tid, const WaitStatus& st, std::optional<bool> same_group = {});
  // The creator's PTRACE_EVENT_CLONE named a new thread of the group.
  void add_clone_child(pid_t child);

  // Bookkeeping of the actions TracedProcess takes.
  void resumed(pid_t tid, bool listening);
  void interrupted(pid_t tid);
  void exiting(pid_t tid);  // ptrace answered ESRCH
  void forget(pid_t tid);   // no longer ours (detached)
  void clear();             // after exec: everything but the exec'ing thread is gone

  // The signal of the thread's signal-delivery stop was profctl's own and is not the
  // target's: a breakpoint of profctl's (the trap has been dealt with), or the sampling
  // session's CPU timer (the stop is then a sample: take_timer_stop()). The thread stays
  // stopped, with no signal to re-deliver.
  void breakpoint_trap(pid_t tid);
  void timer_signal(pid_t tid);
  // True, once, when the thread's current stop is the CPU timer's (timer_signal): its
  // sample is taken now. Any later wait status clears it too (apply).
  bool take_timer_stop(pid_t tid);
  // A sample of the thread was asked for at `now_ns` (monotonic); sample_taken() ends the
  // request and returns when it was made (0: none was pending).
  void sample_requested(pid_t tid, uint64_t now_ns);
  uint64_t sample_taken(pid_t tid);

  const TracedThread* find(pid_t tid) const;
  bool gone(pid_t tid) const { return gone_.count(tid) > 0; }
  size_t size() const { return threads_.size(); }
  bool empty() const { return threads_.empty(); }
  std::vector<pid_t> tids() const;
  // Threads whose stop we are waiting for (kNew, kInterrupted).
  size_t awaiting_stop() const { return awaiting_; }
  const std::map<pid_t, TracedThread>& all() const { return threads_; }

 private:
  TracedThread* find_mut(pid_t tid);
  void mark_gone(pid_t tid);
  // Every change of a thread's state goes through here, so awaiting_stop() is O(1).
  void set_state(TracedThread& t, TState s);

  std::map<pid_t, TracedThread> threads_;
  size_t awaiting_ = 0;  // threads in kNew or kInterrupted
  std::set<pid_t> gone_;
  std::deque<pid_t> gone_order_;
  size_t gone_cap_;
};

}  // namespace profctl
