// SPDX-License-Identifier: MIT
// TraceObserver: what code outside the stop path (the probe engine, the sampling session,
// the process tree) hears of a traced process, and the few answers it gives, in one
// interface. Every method is called on the tracing thread while the thread concerned is
// stopped, from TracedProcess's one status handler or its snapshots; each has a default that
// changes nothing, so an observer overrides only what it needs. An observer never adds or
// removes observers of the process calling it.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <memory>

#include "attach/snapshot.h"

namespace profctl {

class StoppedWorld;
class TracedProcess;

// A process (not a thread) a traced thread created, held at its first stop.
struct ChildHookArgs {
  pid_t pid = 0;           // the new process
  pid_t parent_tid = 0;    // the thread that created it
  int event = 0;           // PTRACE_EVENT_FORK / _VFORK / _CLONE
  bool shares_vm = false;  // vfork, clone(CLONE_VM): it runs in the target's own memory
  bool followed = false;   // an observer will keep it traced (follows_child said so)
};

// With several traced processes (a ProcessTree), the two halves of a child process's
// creation — its creator's event and its own first stop — can reach different processes:
// the first stop of a child whose event has not arrived yet is routed by its parent pid,
// which is not its creator's after clone(CLONE_PARENT) or a reparenting. Asked at a
// creator's event when the process has not seen the child's first stop: kFirstStop when
// another process held it (and gave it up), kKnown when the child is traced already.
enum class ChildClaim { kNone, kFirstStop, kKnown };

class TraceObserver {
 public:
  virtual ~TraceObserver() = default;

  // ---- threads ----
  // A thread's first stop (seized at birth), with its registers there.
  virtual void on_new_thread(pid_t /*tid*/, const user_regs_struct& /*regs*/) {}
  virtual void on_thread_exit(pid_t /*tid*/) {}
  // A SIGTRAP signal-stop: true when it was profctl's own breakpoint and the observer has
  // moved rip on (the signal is then not delivered).
  virtual bool on_trap(pid_t /*tid*/) { return false; }
  // True when signal `sig` stopping `tid` is profctl's own (the sampling session's CPU
  // timer): the stop becomes a timer sample and the signal is never delivered.
  virtual bool own_signal(pid_t /*tid*/, int /*sig*/) { return false; }
  virtual void on_exec() {}

  // ---- snapshots ----
  // Every snapshot, right after its stack was copied, while the thread is still stopped:
  // the probe engine puts back what its own patches changed in the copy (a timed wait's
  // return address), so nothing read from the target shows profctl's own bytes.
  virtual void filter_snapshot(Snapshot& /*s*/) {}
  // Every sampling snapshot (after every observer's filter), still at the stop: the
  // session reads what the kernel says of the thread there.
  virtual void on_sample(Snapshot& /*s*/) {}

  // ---- child processes (fork, vfork, clone without CLONE_THREAD) ----
  // Asked first: true when the observer will keep the child traced (adopt_child will say
  // yes). The answer is in ChildHookArgs::followed for on_child_process.
  virtual bool follows_child(const ChildHookArgs& /*args*/) const { return false; }
  // Held at its first stop, before it runs a single instruction: `child` gives its memory
  // and a syscall in it (the probe engine cleans its copy of the probes, or, for a child
  // that is followed, makes them the child's own).
  virtual void on_child_process(const ChildHookArgs& /*args*/, StoppedWorld& /*child*/) {}
  // After every observer's on_child_process: true when the observer keeps the child
  // traced (a ProcessTree following it, now its owner); otherwise it is detached.
  virtual bool adopt_child(const ChildHookArgs& /*args*/, TracedProcess& /*parent*/) {
    return false;
  }
  // See ChildClaim.
  virtual ChildClaim claim_child(pid_t /*child*/, const TracedProcess& /*asker*/) {
    return ChildClaim::kNone;
  }

  // ---- detach ----
  // True when the observer has something to undo in the target before the last detach
  // (probes to remove): the detach then stops the world once more for before_detach.
  virtual bool needs_detach_stop() const { return false; }
  // Runs inside the last stopped world before every thread is detached, on every exit
  // path that detaches (normal end, error, exception unwinding through the destructor).
  // Returns false to ask for the target to run briefly and be stopped again (a thread was
  // inside code the observer must not remove yet); bounded at about a second.
  virtual bool before_detach(StoppedWorld& /*world*/) { return true; }
};

// A registration that does not own `o` (the caller keeps it alive and removes it).
inline std::shared_ptr<TraceObserver> unowned(TraceObserver& o) {
  return {std::shared_ptr<TraceObserver>(), &o};
}

}  // namespace profctl
