// SPDX-License-Identifier: MIT
#include "attach/process_tree.h"

#include <sys/ptrace.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "attach/proc.h"
#include "base/fd.h"
#include "base/log.h"

namespace profctl {

ProcessTree::ProcessTree(TracedProcess& root, TreeOptions opts) : root_(root), opts_(opts) {
  spaces_seen_.push_back(root_.space_id());  // its modules are the capture's own
  comms_[root_.pid()] = read_comm(root_.pid());
  hook(root_);
}

ProcessTree::~ProcessTree() {
  detach_children();
  root_.set_status_router({});
  root_.set_adopt_hook({});
  root_.set_child_claim({});
  root_.set_sample_hook({});
}

namespace {

// Whether thread `tid` of `pid` might be between creating a process and stopping at its
// fork/clone event: it runs (/proc cannot say where), or is blocked in a fork or clone. A
// thread gone, a zombie, or blocked anywhere else is not creating anything.
bool may_be_creating(pid_t pid, pid_t tid) {
  auto stat = read_task_stat(pid, tid);
  if (!stat || stat->state == 'Z' || stat->state == 'X') {
    return false;
  }
  auto text =
      read_file("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/syscall");
  if (!text) {
    return false;
  }
  if (text->starts_with("running")) {
    return true;
  }
  auto w = parse_syscall(*text);  // nullopt: "-1 ...", blocked outside a syscall
  return w &&
         (w->nr == SYS_clone || w->nr == SYS_fork || w->nr == SYS_vfork || w->nr == SYS_clone3);
}

}  // namespace

template <class F>
void ProcessTree::for_each_process(F&& f) {
  f(root_);
  for (auto& c : children_) {
    f(*c);
  }
  for (auto& c : exited_) {
    f(*c);
  }
}

void ProcessTree::detach_children(std::chrono::milliseconds stop_timeout) {
  closing_ = true;
  // Every thread is interrupted first, so that they all stop in parallel; then each process
  // collects its stops and detaches. A child's detach stops its threads first; a status of
  // one that another's wait took is in the child's own queue (routed_in_), so no stop is
  // waited for twice. It stays in children_ while it detaches: the router must still know
  // whose statuses are whose.
  for (auto& c : children_) {
    for (pid_t tid : c->tids()) {
      c->interrupt_one(tid);
    }
  }
  // Past the deadline (a thread that never stops took it) each process still gets 20 ms:
  // its threads were interrupted long ago, their stops are there to collect.
  const auto deadline = std::chrono::steady_clock::now() + stop_timeout;
  auto left = [&] {
    return std::max(std::chrono::duration_cast<std::chrono::milliseconds>(
                        deadline - std::chrono::steady_clock::now()),
                    std::chrono::milliseconds(20));
  };
  while (!children_.empty()) {
    children_.back()->detach(left());
    stats_.left_traced += children_.back()->left_traced();
    children_.pop_back();
  }
  while (!exited_.empty()) {
    exited_.back()->detach(left());
    stats_.left_traced += exited_.back()->left_traced();
    exited_.pop_back();
  }
  closing_ = false;
}

void ProcessTree::note(std::string s) {
  logger("attach")->info("{}", s);
  if (notes_.size() < 20) {
    notes_.push_back(std::move(s));
  }
}

void ProcessTree::hook(TracedProcess& tp) {
  tp.set_status_router([this](Waiter::Event& ev, const TracedProcess& self) {
    TracedProcess* o = owner_of(ev.tid);
    if (o == nullptr) {
      release_stray(ev);
      return true;
    }
    if (o == &self) {
      return false;
    }
    if (ev.pending_in_kernel) {
      // Left in the kernel, it would be peeked again and again: reaped now, its signal is
      // the owner's to re-deliver (pending_signal) like any other.
      waiter_.consume(ev);
      ev.pending_in_kernel = false;
    }
    o->routed_in_.push_back(ev);
    return true;
  });
  tp.set_adopt_hook(
      [this](const ChildHookArgs& a, TracedProcess& parent) { return adopt(a, parent); });
  tp.set_child_claim(
      [this](pid_t child, const TracedProcess& asker) { return claim(child, asker); });
  tp.set_sample_hook([this](Snapshot& s) {
    if (std::find(spaces_seen_.begin(), spaces_seen_.end(), s.space) == spaces_seen_.end()) {
      spaces_seen_.push_back(s.space);
      if (new_space_) {
        new_space_(s.pid, s.space);
      }
    }
    if (sample_hook_) {
      sample_hook_(s);
    }
  });
  tp.set_own_signal(own_signal_);
  tp.set_stack_bytes(stack_bytes_);
}

bool ProcessTree::adopt(const ChildHookArgs& a, TracedProcess& parent) {
  if (!opts_.follow || closing_) {
    return false;
  }
  if (children_.size() >= opts_.max_processes) {
    if (stats_.not_followed++ == 0) {
      note("more than " + std::to_string(opts_.max_processes) +
           " child processes at once (--max-processes): the others run unprofiled");
    }
    return false;
  }
  std::unique_ptr<TracedProcess> c(new TracedProcess(a.pid));
  c->space_id_ = parent.space_id_;         // a copy of its parent's mappings until it execs
  c->table_.add(a.pid, TState::kStopped);  // at its first stop, already reaped
  hook(*c);
  comms_[a.pid] = read_comm(a.pid);
  ++stats_.followed;
  TraceEvent e(TraceEvent::Kind::kProcessCreated, a.parent_tid, a.pid);
  e.process = a.pid;
  events_.push_back(std::move(e));
  TracedProcess* cp = c.get();
  children_.push_back(std::move(c));
  cp->resume_one(a.pid, /*detach=*/false);
  return true;
}

const TracedProcess* ProcessTree::find(pid_t tid) const {
  if (root_.table_.find(tid) != nullptr) {
    return &root_;
  }
  for (const auto& c : children_) {
    if (c->table_.find(tid) != nullptr) {
      return c.get();
    }
  }
  return nullptr;
}

TracedProcess* ProcessTree::owner_of(pid_t tid) {
  if (root_.owns(tid) || (children_.empty() && exited_.empty())) {
    return &root_;
  }
  for (auto& c : children_) {
    if (c->owns(tid)) {
      return c.get();
    }
  }
  for (auto& c : exited_) {
    if (c->owns(tid)) {
      return c.get();
    }
  }
  // Not known yet: a new thread or a new process of one of ours, whose first stop came
  // before its creator's event. A thread goes by its thread group, never by its parent
  // pid: every thread of a child process has that child's parent (the root, for the root's
  // own children) as its ppid, and a thread's first stop held as a child process's would
  // wait for a creator's event that never comes (the thread stays stopped for good).
  auto st = read_status(tid);
  if (!st) {
    return &root_;  // gone already: its exit is all that is left of it
  }
  if (st->tgid == root_.pid()) {
    return &root_;
  }
  for (auto& c : children_) {
    if (c->pid() == st->tgid) {
      return c.get();
    }
  }
  if (st->tgid != tid) {
    return nullptr;  // a thread of no process of ours
  }
  // A new process: by its parent, a guess (clone(CLONE_PARENT) or a reparenting makes it
  // another's); claim() hands the first stop over when its creator's event comes elsewhere.
  for (auto& c : children_) {
    if (c->pid() == st->ppid) {
      return c.get();
    }
  }
  return &root_;
}

void ProcessTree::release_stray(const Waiter::Event& ev) {
  // Cannot happen by construction (a process is followed before it runs, so its threads
  // are known by their group); if it did, holding the thread would stop it for good.
  if (!ev.status.stopped()) {
    return;  // an exit: nothing is held
  }
  const int sig = ev.status.kind() == WaitStatus::Kind::kSignalStop ? ev.status.signal() : 0;
  const long r = ptrace(PTRACE_DETACH, ev.tid, nullptr, sig);
  logger("attach")->warn("thread {} is traced but belongs to no followed process: released ({})",
                         ev.tid, r == 0 ? "detached" : std::strerror(errno));
}

TracedProcess::ChildClaim ProcessTree::claim(pid_t child, const TracedProcess& asker) {
  using C = TracedProcess::ChildClaim;
  C out = C::kNone;
  if (auto it = std::find(settled_early_.begin(), settled_early_.end(), child);
      it != settled_early_.end()) {
    settled_early_.erase(it);  // settled at its first stop: its creator was thought dead
    return C::kKnown;
  }
  for_each_process([&](TracedProcess& p) {
    if (out != C::kNone || &p == &asker) {
      return;
    }
    if (p.pid() == child) {
      out = C::kKnown;  // followed already
      return;
    }
    auto it = p.children_.find(child);
    if (it != p.children_.end() && it->second.first_stop && it->second.parent_tid == 0) {
      p.children_.erase(it);  // its first stop, routed there by its parent pid
      out = C::kFirstStop;
      logger("attach")->debug(
          "child process {}: its first stop, held by {}, goes to its "
          "creator {}",
          child, p.pid(), asker.pid());
    }
  });
  return out;
}

bool ProcessTree::creation_may_be_in_flight() {
  bool maybe = false;
  for_each_process([&](TracedProcess& p) {
    for (const auto& [tid, t] : p.table_.all()) {
      // Held by us (its events are handled as they come) or not run yet: not creating.
      if (maybe || t.state == TState::kStopped || t.state == TState::kNew) {
        continue;
      }
      maybe = may_be_creating(p.pid(), tid);
    }
  });
  return maybe;
}

void ProcessTree::settle_stranded() {
  // The first stop of a process whose creator's event has not come is held, by the process
  // of its parent pid, until the event names its creator. A creator killed at that event
  // (SIGKILL to a process right after its clone(CLONE_PARENT), or its fork with the child
  // reparented) never reports it, and its exit names no child: the stop would be held for
  // good, and whoever waits for that child with it. Once no traced thread can be between
  // a creation and its event, every such stop is stranded and is settled, parent unknown.
  std::vector<std::pair<TracedProcess*, ChildProcess>> held;
  for_each_process([&](TracedProcess& p) {
    for (const auto& [cpid, c] : p.children_) {
      if (c.first_stop && c.parent_tid == 0) {
        held.emplace_back(&p, c);
      }
    }
  });
  if (held.empty() || creation_may_be_in_flight()) {
    return;
  }
  for (auto& [p, c] : held) {
    logger("attach")->debug("child process {}: held by {}, no creator can report it: settled",
                            c.pid, p->pid());
    p->settle_child(c);
    p->children_.erase(c.pid);
    settled_early_.push_back(c.pid);
    if (settled_early_.size() > 4096) {
      settled_early_.pop_front();
    }
  }
}

std::vector<pid_t> ProcessTree::tids() const {
  std::vector<pid_t> out = root_.tids();
  for (const auto& c : children_) {
    auto t = c->tids();
    out.insert(out.end(), t.begin(), t.end());
  }
  return out;
}

size_t ProcessTree::thread_count() const {
  size_t n = root_.thread_count();
  for (const auto& c : children_) {
    n += c->thread_count();
  }
  return n;
}

pid_t ProcessTree::pid_of(pid_t tid) const {
  const TracedProcess* p = find(tid);
  return p != nullptr ? p->pid() : 0;
}

uint32_t ProcessTree::space_of(pid_t tid) const {
  const TracedProcess* p = find(tid);
  return p != nullptr ? p->space_id() : 0;
}

uint32_t ProcessTree::current_space(pid_t pid) const {
  if (root_.pid() == pid) {
    return root_.space_id();
  }
  for (const auto& c : children_) {
    if (c->pid() == pid) {
      return c->space_id();
    }
  }
  return 0;
}

std::string ProcessTree::comm_of(pid_t pid) const {
  auto it = comms_.find(pid);
  return it != comms_.end() ? it->second : std::string();
}

bool ProcessTree::job_stopped(pid_t tid) const {
  const TracedProcess* p = find(tid);
  return p != nullptr && p->job_stopped(tid);
}

bool ProcessTree::request_sample(pid_t tid) {
  TracedProcess* p = find(tid);
  return p != nullptr && p->request_sample(tid);
}

void ProcessTree::set_sample_hook(SnapshotFilter f) { sample_hook_ = std::move(f); }

void ProcessTree::set_own_signal(OwnSignal f) {
  own_signal_ = std::move(f);
  root_.set_own_signal(own_signal_);
  for (auto& c : children_) {
    c->set_own_signal(own_signal_);
  }
}

void ProcessTree::set_stack_bytes(size_t n) {
  stack_bytes_ = n;
  root_.set_stack_bytes(n);
  for (auto& c : children_) {
    c->set_stack_bytes(n);
  }
}

std::optional<ProcessTree::TraceEvent> ProcessTree::next_event(std::chrono::milliseconds timeout,
                                                               size_t stack_bytes) {
  settle_stranded();
  // An exited child whose last child process is settled is of no more use.
  std::erase_if(exited_,
                [](const auto& c) { return c->children_.empty() && c->routed_in_.empty(); });
  if (!events_.empty()) {
    TraceEvent e = std::move(events_.front());
    events_.pop_front();
    return e;
  }
  // What a process queued for itself: its own events, statuses another's wait took.
  for (size_t i = 0; i <= children_.size() + exited_.size(); ++i) {
    TracedProcess& p = i == 0                     ? root_
                       : i - 1 < children_.size() ? *children_[i - 1]
                                                  : *exited_[i - 1 - children_.size()];
    if (!p.events_.empty()) {
      TraceEvent e = std::move(p.events_.front());
      p.events_.pop_front();
      return e;
    }
    if (!p.routed_in_.empty()) {
      Waiter::Event ev = p.routed_in_.front();
      p.routed_in_.pop_front();
      return after(p, p.handle_status(ev, stack_bytes));
    }
  }
  auto ev = waiter_.next(timeout);
  if (!ev) {
    return std::nullopt;
  }
  TracedProcess* o = owner_of(ev->tid);
  if (o == nullptr) {
    release_stray(*ev);
    return std::nullopt;
  }
  return after(*o, o->handle_status(*ev, stack_bytes));
}

std::optional<ProcessTree::TraceEvent> ProcessTree::after(TracedProcess& tp,
                                                          std::optional<TraceEvent> ev) {
  using EK = TraceEvent::Kind;
  if (!ev) {
    return ev;
  }
  if (ev->kind == EK::kProcessExited || ev->kind == EK::kExec) {
    ev->process = tp.pid();
  }
  if (ev->kind == EK::kExec) {
    comms_[tp.pid()] = read_comm(tp.pid());
    if (opts_.follow) {
      // Followed: the new image is sampled on (its modules are read at its first sample).
      tp.resume(tp.pid());
    }
    return ev;
  }
  if (ev->kind == EK::kProcessExited && &tp != &root_) {
    ++stats_.exited;
    auto it = std::find_if(children_.begin(), children_.end(),
                           [&](const auto& c) { return c.get() == &tp; });
    if (it != children_.end()) {
      // Nothing left to detach: every thread is gone. A process it created may not be
      // settled yet: one whose creator's event died with it is settled now; one whose first
      // stop is still to come keeps the exited process in exited_ until it arrives.
      std::unique_ptr<TracedProcess> gone = std::move(*it);
      children_.erase(it);
      gone->settle_orphans();
      if (!gone->children_.empty()) {
        logger("attach")->debug(
            "process {} exited before {} child processes reached their "
            "first stop: kept until they do",
            gone->pid(), gone->children_.size());
        exited_.push_back(std::move(gone));
      }
    }
  }
  return ev;
}

}  // namespace profctl
