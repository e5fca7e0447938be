// SPDX-License-Identifier: MIT
#include "attach/process_tree.h"

#include <sys/ptrace.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <variant>

#include "attach/proc.h"
#include "base/fd.h"
#include "base/log.h"

namespace profctl {

ProcessTree::ProcessTree(TracedProcess& root, TreeOptions opts) : root_(root), opts_(opts) {
  spaces_seen_.push_back(root_.space_id());  // its modules are the capture's own
  comms_[root_.pid()] = read_comm(root_.pid());
  watch(root_);
  // Last: nothing after it can throw, so the destructor always gives the queue back.
  queue_ = root_.lend_queue();
  if (queue_ == nullptr) {
    throw std::logic_error("ProcessTree: the root does not own its wait queue");
  }
  queue_->set_router(this);
}

ProcessTree::~ProcessTree() {
  detach_children();
  // The observers added for every process stay on the root until its detach.
  root_.remove_observer(this);
  queue_->set_router(nullptr);
  root_.return_queue(std::move(queue_));
}

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
  // one that another's wait took is held for it in the queue, so no stop is waited for
  // twice. It stays in children_ while it detaches: the router must still know whose
  // statuses are whose.
  for (auto& c : children_) {
    c->interrupt_all();
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

void ProcessTree::watch(TracedProcess& tp) {
  tp.add_observer(unowned(*this));
  for (const auto& o : observers_) {
    tp.add_observer(o);
  }
  tp.set_stack_bytes(stack_bytes_);
}

void ProcessTree::add_observer(std::shared_ptr<TraceObserver> o) {
  for_each_process([&](TracedProcess& p) { p.add_observer(o); });
  observers_.push_back(std::move(o));
}

void ProcessTree::remove_observer(const TraceObserver* o) {
  for_each_process([&](TracedProcess& p) { p.remove_observer(o); });
  std::erase_if(observers_, [&](const auto& p) { return p.get() == o; });
}

void ProcessTree::on_sample(Snapshot& s) { note_space(s.pid, s.space); }

void ProcessTree::note_space(pid_t pid, uint32_t space) {
  if (std::find(spaces_seen_.begin(), spaces_seen_.end(), space) == spaces_seen_.end()) {
    spaces_seen_.push_back(space);
    if (new_space_) {
      new_space_(pid, space);
    }
  }
}

bool ProcessTree::follows_child(const ChildHookArgs& /*args*/) const {
  return opts_.follow && !closing_ && children_.size() < opts_.max_processes;
}

bool ProcessTree::adopt_child(const ChildHookArgs& a, TracedProcess& parent) {
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
  std::unique_ptr<TracedProcess> c = TracedProcess::follow_child(a.pid, parent);
  watch(*c);
  ++stats_.followed;
  TraceEvent e(TraceEvent::Kind::kProcessCreated, a.parent_tid, a.pid);
  e.process = a.pid;
  queue_->push_back(std::move(e));
  TracedProcess* cp = c.get();
  children_.push_back(std::move(c));
  if (followed_) {
    followed_(*cp);
  }
  cp->resume(a.pid);
  // Read once it runs: a vfork parent waits for this child's exec, so the child's stop
  // is the program's own time. A zombie's comm stays readable until profctl reaps it.
  comms_[a.pid] = read_comm(a.pid);
  return true;
}

const TracedProcess* ProcessTree::find(pid_t tid) const {
  if (root_.has_thread(tid)) {
    return &root_;
  }
  for (const auto& c : children_) {
    if (c->has_thread(tid)) {
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

ChildClaim ProcessTree::claim_child(pid_t child, const TracedProcess& asker) {
  if (auto it = std::find(settled_early_.begin(), settled_early_.end(), child);
      it != settled_early_.end()) {
    settled_early_.erase(it);  // settled at its first stop: its creator was thought dead
    return ChildClaim::kKnown;
  }
  ChildClaim out = ChildClaim::kNone;
  for_each_process([&](TracedProcess& p) {
    if (out != ChildClaim::kNone || &p == &asker) {
      return;
    }
    if (p.pid() == child) {
      out = ChildClaim::kKnown;  // followed already
      return;
    }
    if (p.give_up_first_stop(child)) {  // its first stop, routed there by its parent pid
      out = ChildClaim::kFirstStop;
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
  for_each_process([&](TracedProcess& p) { maybe = maybe || p.creation_may_be_in_flight(); });
  return maybe;
}

void ProcessTree::settle_stranded() {
  // The first stop of a process whose creator's event has not come is held, by the process
  // of its parent pid, until the event names its creator. A creator killed at that event
  // (SIGKILL to a process right after its clone(CLONE_PARENT), or its fork with the child
  // reparented) never reports it, and its exit names no child: the stop would be held for
  // good, and whoever waits for that child with it. Once no traced thread can be between
  // a creation and its event, every such stop is stranded and is settled, parent unknown.
  std::vector<std::pair<TracedProcess*, pid_t>> held;
  for_each_process([&](TracedProcess& p) {
    for (pid_t c : p.held_first_stops()) {
      held.emplace_back(&p, c);
    }
  });
  if (held.empty() || creation_may_be_in_flight()) {
    return;
  }
  for (auto& [p, c] : held) {
    logger("attach")->debug("child process {}: held by {}, no creator can report it: settled", c,
                            p->pid());
    p->settle_first_stop(c);
    settled_early_.push_back(c);
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

void ProcessTree::set_stack_bytes(size_t n) {
  stack_bytes_ = n;
  root_.set_stack_bytes(n);
  for (auto& c : children_) {
    c->set_stack_bytes(n);
  }
}

std::optional<ProcessTree::TraceEvent> ProcessTree::next_event(std::chrono::nanoseconds timeout,
                                                               size_t stack_bytes) {
  settle_stranded();
  // An exited child whose last child process is settled is of no more use.
  std::erase_if(exited_, [&](const auto& c) {
    return c->unsettled_children() == 0 && !queue_->holds_status_for(*c);
  });
  auto entry = queue_->next(timeout);
  if (!entry) {
    return std::nullopt;
  }
  if (auto* ev = std::get_if<TraceEvent>(&*entry)) {
    return std::move(*ev);
  }
  const auto& held = std::get<WaitQueue::Held>(*entry);
  return after(*held.owner, held.owner->handle_status(held.status, stack_bytes));
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
    if (opts_.follow) {
      // Followed: the new image is sampled on (its modules are read at its first sample).
      if (child_exec_ && &tp != &root_) {
        child_exec_(tp);
      }
      tp.resume(tp.pid());
    }
    comms_[tp.pid()] = read_comm(tp.pid());  // after the resume: off the program's time
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
      if (gone->unsettled_children() > 0) {
        logger("attach")->debug(
            "process {} exited before {} child processes reached their "
            "first stop: kept until they do",
            gone->pid(), gone->unsettled_children());
        exited_.push_back(std::move(gone));
      }
    }
  }
  return ev;
}

}  // namespace profctl
