// SPDX-License-Identifier: MIT
// ProcessTree: the traced processes of one capture — the target, and, when following
// children (`run` by default, `attach --children`), every process it starts by fork, vfork
// or clone without CLONE_THREAD, and their execs, as `perf record -- CMD` follows them.
// It gives the sampling session one view of all their threads: one wait queue for every
// status, each routed to the process that owns the thread, and one event stream.
//
// A child is seized by the kernel at birth (PTRACE_O_TRACEFORK...). Past max_processes,
// or without following, it is cleaned (the observers' on_child_process) and detached at once.
// An adopted child's exit is a note, never the capture's end; the target's exit ends it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "attach/trace_event.h"
#include "attach/trace_observer.h"
#include "attach/traced_process.h"
#include "attach/wait_queue.h"
#include "attach/waiter.h"

namespace profctl {

struct TreeOptions {
  bool follow = false;        // keep child processes traced (sampled), not just cleaned
  size_t max_processes = 64;  // child processes followed at most; the rest run untraced
};

struct TreeStats {
  uint64_t followed = 0;      // child processes traced
  uint64_t not_followed = 0;  // child processes detached at birth: over max_processes
  uint64_t exited = 0;        // followed processes that exited during the capture
  uint64_t left_traced = 0;   // threads and processes the detach could not reach (never stopped)
};

// The tree is the capture's wait choke point while it lives: it owns the one WaitQueue
// (taken over from the root, given back at its end) and routes every status to the process
// owning the thread; and it observes every process it holds, to adopt and settle the
// processes they create.
class ProcessTree : private TraceObserver, private WaitQueue::Router {
 public:
  using TraceEvent = ::profctl::TraceEvent;

  // `root` must own its wait queue (a process seized or launched, not a followed child);
  // it outlives the tree.
  ProcessTree(TracedProcess& root, TreeOptions opts);
  // Detaches every followed child (the root is its owner's to detach).
  ~ProcessTree() override;
  ProcessTree(const ProcessTree&) = delete;
  ProcessTree& operator=(const ProcessTree&) = delete;

  TracedProcess& root() { return root_; }
  pid_t pid() const { return root_.pid(); }
  bool following() const { return opts_.follow; }
  // Every traced thread of every process.
  std::vector<pid_t> tids() const;
  size_t thread_count() const;
  size_t process_count() const { return 1 + children_.size(); }
  // The process (thread group) of a traced thread, and its address space's id; 0 unknown.
  pid_t pid_of(pid_t tid) const;
  uint32_t space_of(pid_t tid) const;
  // The process's name (its leader's comm), as it was at its last exec.
  std::string comm_of(pid_t pid) const;
  // The address space of a followed process now (0: not followed, or gone).
  uint32_t current_space(pid_t pid) const;
  bool job_stopped(pid_t tid) const;

  // An observer of every process of the tree, present and future, after the tree's own
  // (TracedProcess::add_observer). An owned one stays on each process until its detach,
  // the root's included (a CPU timer's signal raised late is still recognised); an
  // unowned one is removed by remove_observer() before it dies.
  void add_observer(std::shared_ptr<TraceObserver> o);
  void remove_observer(const TraceObserver* o);

  // TracedProcess's sampling calls, for whichever process owns `tid`.
  bool request_sample(pid_t tid);
  // The next event of any process: the oldest queued (an event, or a status a process's
  // own wait held for another), else the kernel's next status, handled by its owner.
  std::optional<TraceEvent> next_event(std::chrono::nanoseconds timeout, size_t stack_bytes);
  // Puts an event back, to be returned first by next_event().
  void push_event(TraceEvent e) { queue_->push_front(std::move(e)); }
  void set_stack_bytes(size_t n);

  // Called at the first snapshot of each address space, while its thread is stopped (the
  // process is alive: its modules can be read), before the other observers' on_sample.
  using NewSpace = std::function<void(pid_t pid, uint32_t space)>;
  void set_new_space(NewSpace f) { new_space_ = std::move(f); }
  // Called for each child process the tree follows, while it is still held at its first
  // stop (its observers can be added; it runs once this returns).
  using Followed = std::function<void(TracedProcess& child)>;
  void set_followed(Followed f) { followed_ = std::move(f); }
  // Called when a followed child has exec'd, held at its exec event, before it runs on (it
  // may be run further and held again: the probes of its new image go in there).
  void set_child_exec(Followed f) { child_exec_ = std::move(f); }
  // A sample of `space` taken without a stop (a kernel sample record): announces the space
  // as a stop's snapshot does, once, while its process is alive.
  void note_space(pid_t pid, uint32_t space);

  // Detaches every followed child now (the destructor does the same). Their threads are
  // interrupted all at once and one deadline (`stop_timeout`) bounds the whole detach,
  // however many processes have a thread that does not stop.
  void detach_children(std::chrono::milliseconds stop_timeout = std::chrono::milliseconds(2000));
  const TreeStats& stats() const { return stats_; }
  std::vector<std::string> take_notes() { return std::move(notes_); }

 private:
  // WaitQueue::Router: the process a status of `tid` is for; null for a stray (a thread of
  // no process of ours), whose stop is let go of.
  TracedProcess* owner_of(pid_t tid) override;
  void release_stray(const Waiter::Event& ev) override;
  // TraceObserver, on every process of the tree.
  void on_sample(Snapshot& s) override;
  bool follows_child(const ChildHookArgs& args) const override;
  bool adopt_child(const ChildHookArgs& args, TracedProcess& parent) override;
  ChildClaim claim_child(pid_t child, const TracedProcess& asker) override;

  // A first stop held for its creator's event (parent unknown) whose creator can no longer
  // report it (killed at its clone event: the kernel drops the event) is settled now.
  void settle_stranded();
  // True while a traced thread of the tree might still be between creating a process and
  // reporting it (running, or in a fork/clone syscall).
  bool creation_may_be_in_flight();
  // Every process that can own a status: the root, the followed children, and the exited
  // children that still have a child process to settle.
  template <class F>
  void for_each_process(F&& f);
  // The process whose thread table holds `tid`, or null.
  const TracedProcess* find(pid_t tid) const;
  TracedProcess* find(pid_t tid) {
    return const_cast<TracedProcess*>(std::as_const(*this).find(tid));
  }
  // Registers the tree's observers on a process it holds.
  void watch(TracedProcess& tp);
  // What a process's event means for the tree: a followed child's exit and any followed
  // exec are absorbed (their threads' exits are queued instead).
  std::optional<TraceEvent> after(TracedProcess& tp, std::optional<TraceEvent> ev);
  void note(std::string s);

  TracedProcess& root_;
  TreeOptions opts_;
  // The capture's one wait queue, the root's while the tree lives.
  std::unique_ptr<WaitQueue> queue_;
  std::vector<std::unique_ptr<TracedProcess>> children_;
  // Followed children that exited while a process they created was not settled yet (its
  // first stop still to come): kept until it is, so that it is settled, never held.
  std::vector<std::unique_ptr<TracedProcess>> exited_;
  // Child processes settled before their creator's event (settle_stranded): if the event
  // comes after all, claim_child() says the child is dealt with. Bounded: pids are reused.
  std::deque<pid_t> settled_early_;
  bool closing_ = false;  // detaching: a child process created now is detached, not followed
  std::vector<std::shared_ptr<TraceObserver>> observers_;  // add_observer's, for every process
  NewSpace new_space_;
  Followed followed_;
  Followed child_exec_;
  std::vector<uint32_t> spaces_seen_;
  std::map<pid_t, std::string> comms_;
  size_t stack_bytes_ = 8u << 20;
  TreeStats stats_;
  std::vector<std::string> notes_;
};

}  // namespace profctl
