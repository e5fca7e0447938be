// SPDX-License-Identifier: MIT
#include "attach/thread_table.h"

#include <sys/ptrace.h>

#include <sstream>
#include <utility>

#include "base/log.h"

namespace profctl {
namespace {
bool awaits(TState s) { return s == TState::kNew || s == TState::kInterrupted; }
}  // namespace

const char* tstate_name(TState s) {
  switch (s) {
    case TState::kNew:
      return "new";
    case TState::kRunning:
      return "running";
    case TState::kInterrupted:
      return "interrupted";
    case TState::kStopped:
      return "stopped";
    case TState::kListening:
      return "listening";
    case TState::kExiting:
      return "exiting";
  }
  return "?";
}

void ThreadTable::add(pid_t tid, TState s) {
  gone_.erase(tid);  // a reused tid is a new thread
  forget(tid);
  TracedThread& t = threads_[tid];
  t.state = TState::kRunning;
  set_state(t, s);
}

void ThreadTable::add_clone_child(pid_t child) {
  if (child <= 0 || threads_.count(child) || gone_.count(child)) {
    // Already seen (its first stop came first), or it has already exited: a late clone
    // event must not bring back a thread whose stop will never come.
    return;
  }
  set_state(threads_[child], TState::kNew);
}

void ThreadTable::mark_gone(pid_t tid) {
  forget(tid);
  if (gone_.insert(tid).second) {
    gone_order_.push_back(tid);
    while (gone_order_.size() > gone_cap_) {
      gone_.erase(gone_order_.front());
      gone_order_.pop_front();
    }
  }
}

Transition ThreadTable::apply(pid_t tid, const WaitStatus& st, std::optional<bool> same_group) {
  using K = WaitStatus::Kind;
  using W = Transition::What;
  Transition tr;
  tr.tid = tid;
  auto it = threads_.find(tid);
  if (it == threads_.end()) {
    const K k = st.kind();
    if (k == K::kExited || k == K::kKilled) {
      mark_gone(tid);  // an exit of a thread forgotten (after exec) or never seen
      tr.what = W::kExited;
      return tr;
    }
    // A thread seized at birth can report its first stop before its creator's clone
    // event. It is ours if it is in our thread group; otherwise it is a child process.
    if (!st.stopped() || !same_group.value_or(false)) {
      return tr;  // kNotOurs
    }
    it = threads_.emplace(tid, TracedThread{}).first;
    set_state(it->second, TState::kNew);
  }
  TracedThread& t = it->second;
  // A CPU-timer stop is a sample only for the status that reported it: one another path
  // consumed (a world stop) must not turn this thread's next event (a clone) into one.
  t.own_signal_stop = false;
  tr.before = t.state;
  tr.first_stop = t.state == TState::kNew;
  switch (st.kind()) {
    case K::kExited:
    case K::kKilled:
      mark_gone(tid);
      tr.what = W::kExited;
      return tr;
    case K::kGroupStop:
      set_state(t, TState::kStopped);
      t.group_stop = true;
      tr.what = W::kGroupStop;
      tr.signal = st.signal();
      break;
    case K::kSignalStop:
      set_state(t, TState::kStopped);
      t.group_stop = false;
      t.pending_signal = st.signal();
      t.signal_in_kernel = true;
      tr.what = W::kSignal;
      tr.signal = st.signal();
      break;
    case K::kPtraceEvent:
      set_state(t, TState::kStopped);
      t.group_stop = false;
      tr.what = W::kPtraceEvent;
      tr.event = st.ptrace_event();
      break;
    case K::kEventStop:
    case K::kSyscallStop:
    case K::kUnknown:
      // An interrupt, a new thread's first stop, or the stop that ends a listening
      // group-stop after SIGCONT: in every case the thread is no longer group-stopped.
      set_state(t, TState::kStopped);
      t.group_stop = false;
      tr.what = W::kStopped;
      break;
  }
  auto log = logger("attach");
  if (log->should_log(spdlog::level::trace)) {
    std::ostringstream os;
    os << st;
    log->trace("thread {}: {} -> {} on {}", tid, tstate_name(tr.before), tstate_name(t.state),
               os.str());
  }
  return tr;
}

void ThreadTable::resumed(pid_t tid, bool listening) {
  if (auto* t = find_mut(tid)) {
    set_state(*t, listening ? TState::kListening : TState::kRunning);
    t->pending_signal = 0;
    t->signal_in_kernel = false;
  }
}

void ThreadTable::interrupted(pid_t tid) {
  if (auto* t = find_mut(tid)) {
    set_state(*t, TState::kInterrupted);
  }
}

void ThreadTable::exiting(pid_t tid) {
  if (auto* t = find_mut(tid)) {
    set_state(*t, TState::kExiting);
  }
}

void ThreadTable::breakpoint_trap(pid_t tid) {
  if (auto* t = find_mut(tid)) {
    t->pending_signal = 0;
    t->signal_in_kernel = false;
  }
}

void ThreadTable::timer_signal(pid_t tid) {
  if (auto* t = find_mut(tid)) {
    t->pending_signal = 0;
    t->signal_in_kernel = false;
    t->own_signal_stop = true;
  }
}

bool ThreadTable::take_timer_stop(pid_t tid) {
  auto* t = find_mut(tid);
  if (t == nullptr || !t->own_signal_stop) {
    return false;
  }
  t->own_signal_stop = false;
  return true;
}

void ThreadTable::sample_requested(pid_t tid, uint64_t now_ns) {
  if (auto* t = find_mut(tid)) {
    t->sample_requested_ns = now_ns;
  }
}

uint64_t ThreadTable::sample_taken(pid_t tid) {
  auto* t = find_mut(tid);
  if (t == nullptr) {
    return 0;
  }
  return std::exchange(t->sample_requested_ns, 0);
}

void ThreadTable::forget(pid_t tid) {
  auto it = threads_.find(tid);
  if (it != threads_.end()) {
    awaiting_ -= awaits(it->second.state) ? 1 : 0;
    threads_.erase(it);
  }
}

void ThreadTable::clear() {
  threads_.clear();
  awaiting_ = 0;
}

TracedThread* ThreadTable::find_mut(pid_t tid) {
  auto it = threads_.find(tid);
  return it == threads_.end() ? nullptr : &it->second;
}

const TracedThread* ThreadTable::find(pid_t tid) const {
  auto it = threads_.find(tid);
  return it == threads_.end() ? nullptr : &it->second;
}

std::vector<pid_t> ThreadTable::tids() const {
  std::vector<pid_t> out;
  out.reserve(threads_.size());
  for (auto& [tid, t] : threads_) {
    out.push_back(tid);
  }
  return out;
}

void ThreadTable::set_state(TracedThread& t, TState s) {
  awaiting_ -= awaits(t.state) ? 1 : 0;
  awaiting_ += awaits(s) ? 1 : 0;
  t.state = s;
}

}  // namespace profctl
