// SPDX-License-Identifier: MIT
#include "attach/traced_process.h"

#include <linux/kcmp.h>
#include <sched.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <iterator>
#include <sstream>
#include <thread>

#include "attach/realtime.h"
#include "attach/stack_reader.h"
#include "attach/stopped_world.h"
#include "base/clock.h"
#include "base/log.h"

namespace profctl {
namespace {

constexpr uint64_t kPfKthread = 0x00200000;  // include/linux/sched.h

// Keeps SIGINT/SIGTERM/SIGHUP/SIGPIPE/SIGQUIT for profctl pending while the world is
// stopped: dying half way would drop the signals we hold for the target. They are acted on
// as soon as every thread has been resumed.
class TerminationSignalsBlocked {
 public:
  TerminationSignalsBlocked() {
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT}) {
      sigaddset(&set, s);
    }
    pthread_sigmask(SIG_BLOCK, &set, &old_);
  }
  ~TerminationSignalsBlocked() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }
  TerminationSignalsBlocked(const TerminationSignalsBlocked&) = delete;
  TerminationSignalsBlocked& operator=(const TerminationSignalsBlocked&) = delete;

 private:
  sigset_t old_{};
};

std::string comm_of(pid_t pid) {
  std::string c = read_comm(pid);
  return c.empty() ? std::string("?") : c;
}

bool has_live_thread(pid_t pid) {
  bool live = false;
  if (auto tids = list_tasks(pid)) {
    for (pid_t t : *tids) {
      auto ts = read_task_stat(pid, t);
      live = live || (ts && ts->state != 'Z' && ts->state != 'X');
    }
  }
  return live;
}

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

AttachError ptrace_scope_error(pid_t pid) {
  std::string scope;
  if (auto s = read_file("/proc/sys/kernel/yama/ptrace_scope")) {
    scope = *s;
    while (!scope.empty() && (scope.back() == '\n' || scope.back() == ' ')) {
      scope.pop_back();
    }
  }
  std::string hint = "run profctl as root or with CAP_SYS_PTRACE (setcap cap_sys_ptrace+ep)";
  if (!scope.empty() && scope != "0") {
    hint +=
        ", or allow tracing non-children: sysctl kernel.yama.ptrace_scope=0 (it is " + scope + ")";
  }
  return {AttachFailure::kPermission,
          "permission denied attaching to pid " + std::to_string(pid) + " (" + comm_of(pid) + ")",
          hint};
}

}  // namespace

TracedProcess::TracedProcess(pid_t pid, uint32_t space_id, std::unique_ptr<WaitQueue> own_queue,
                             WaitQueue* queue)
    : pid_(pid), space_id_(space_id), own_queue_(std::move(own_queue)), queue_(queue) {}

std::unique_ptr<TracedProcess> TracedProcess::make_root(pid_t pid) {
  auto q = std::make_unique<WaitQueue>();
  WaitQueue* qp = q.get();
  return std::unique_ptr<TracedProcess>(new TracedProcess(pid, new_space_id(), std::move(q), qp));
}

std::unique_ptr<TracedProcess> TracedProcess::follow_child(pid_t pid, const TracedProcess& parent) {
  // A copy of its parent's mappings until it execs; waits through the parent's queue.
  std::unique_ptr<TracedProcess> c(
      new TracedProcess(pid, parent.space_id_, nullptr, parent.queue_));
  c->table_.add(pid, TState::kStopped);  // at its first stop, already reaped
  return c;
}

std::unique_ptr<WaitQueue> TracedProcess::lend_queue() { return std::move(own_queue_); }

void TracedProcess::return_queue(std::unique_ptr<WaitQueue> q) {
  queue_ = q.get();
  own_queue_ = std::move(q);
}

void TracedProcess::remove_observer(const TraceObserver* o) {
  std::erase_if(observers_, [&](const auto& p) { return p.get() == o; });
}

std::optional<AttachError> TracedProcess::check_seizable(pid_t pid) {
  const std::string spid = std::to_string(pid);
  if (pid == getpid()) {
    return AttachError{AttachFailure::kSelf, "pid " + spid + " is profctl itself", ""};
  }
  auto status = read_status(pid);
  if (!status) {
    if (status.error().err == ENOENT || status.error().err == ESRCH) {
      return AttachError{AttachFailure::kNoSuchProcess, "no such process: pid " + spid,
                         "check the pid (ps -e)"};
    }
    return AttachError{AttachFailure::kOther,
                       "cannot read /proc/" + spid + "/status: " + status.error().message(), ""};
  }
  if (status->tgid != pid) {
    return AttachError{
        AttachFailure::kOther,
        "pid " + spid + " is a thread of process " + std::to_string(status->tgid),
        "pass the process id: profctl stack " + std::to_string(status->tgid) + " --tid " + spid};
  }
  auto stat = read_task_stat(pid, pid);
  if (stat && (stat->flags & kPfKthread)) {
    return AttachError{AttachFailure::kKernelThread,
                       "pid " + spid + " (" + stat->comm + ") is a kernel thread",
                       "kernel threads have no user-space stack to dump"};
  }
  if ((status->state == 'Z' || status->state == 'X') && !has_live_thread(pid)) {
    // (A zombie leader can still have live threads: the main thread called pthread_exit.)
    return AttachError{AttachFailure::kZombie,
                       "pid " + spid +
                           " is a zombie: it has exited and waits for its parent (pid " +
                           std::to_string(status->ppid) + ") to reap it",
                       "there is nothing left to dump"};
  }
  if (status->tracer_pid != 0) {
    return AttachError{AttachFailure::kAlreadyTraced,
                       "pid " + spid + " is already traced by pid " +
                           std::to_string(status->tracer_pid) + " (" + comm_of(status->tracer_pid) +
                           ")",
                       "detach that tracer (gdb, strace, another profctl) first"};
  }
  return std::nullopt;
}

AttachError TracedProcess::seize_error(const Error& e) const {
  const std::string spid = std::to_string(pid_);
  if (e.err == EPERM || e.err == EACCES) {
    // Recheck: a tracer may have attached between our check and our seize, to the
    // process or to one of its threads only (strace -p TID).
    pid_t who = failed_tid_ != 0 ? failed_tid_ : pid_;
    for (pid_t id : {pid_, who}) {
      if (auto again = read_status(id);
          again && again->tracer_pid != 0 && again->tracer_pid != getpid()) {
        std::string what =
            id == pid_ ? "pid " + spid : "thread " + std::to_string(id) + " of pid " + spid;
        return AttachError{AttachFailure::kAlreadyTraced,
                           what + " is already traced by pid " + std::to_string(again->tracer_pid) +
                               " (" + comm_of(again->tracer_pid) + ")",
                           "detach that tracer (gdb, strace, another profctl) first"};
      }
    }
    return ptrace_scope_error(pid_);
  }
  if (e.err == ESRCH) {
    return AttachError{AttachFailure::kNoSuchProcess,
                       "pid " + spid + " exited while profctl attached", ""};
  }
  return AttachError{AttachFailure::kOther, e.message(), ""};
}

std::variant<std::unique_ptr<TracedProcess>, AttachError> TracedProcess::seize(pid_t pid,
                                                                               bool trace_forks) {
  if (auto refused = check_seizable(pid)) {
    return *refused;
  }
  std::unique_ptr<TracedProcess> tp = make_root(pid);
  tp->trace_forks_ = trace_forks;
  if (auto r = tp->seize_all(); !r) {
    tp->detach_all();
    return tp->seize_error(r.error());
  }
  return tp;
}

Result<void> TracedProcess::seize_one(pid_t tid) {
  // TRACECLONE: a thread cloned by a seized thread is seized by the kernel at birth, so no
  // thread created during a stop escapes it. TRACEFORK/TRACEVFORK: a process the target
  // creates is held at its first stop, so it can be cleaned of probes before it runs, and
  // detached (or followed); not asked for when neither can happen (trace_forks_). A thread
  // the kernel seizes at its clone inherits its creator's options. TRACEEXEC: an exec is
  // reported as an event, not as a stray SIGTRAP. TRACESYSGOOD: the syscall stops of a
  // remote syscall (StoppedWorld::syscall) are told apart from a SIGTRAP, and
  // PTRACE_GET_SYSCALL_INFO describes them.
  constexpr long kForks = PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK;
  constexpr long kOptions =
      PTRACE_O_TRACECLONE | kForks | PTRACE_O_TRACEEXEC | PTRACE_O_TRACESYSGOOD;
  if (ptrace(PTRACE_SEIZE, tid, nullptr, trace_forks_ ? kOptions : kOptions & ~kForks) == 0) {
    table_.add(tid, TState::kRunning);
    return {};
  }
  return errno_error("PTRACE_SEIZE " + std::to_string(tid));
}

Result<void> TracedProcess::seize_all() {
  const size_t before = table_.size();
  // Threads can be created while we seize: list again until a pass finds nothing new.
  for (int pass = 0;; ++pass) {
    auto tids = list_tasks(pid_);
    if (!tids) {
      return tids.error();
    }
    bool any_new = false;
    for (pid_t tid : *tids) {
      if (table_.find(tid) != nullptr || table_.gone(tid) || (tid == pid_ && leader_gone_)) {
        continue;
      }
      any_new = true;
      auto r = seize_one(tid);
      if (r) {
        continue;
      }
      const int err = r.error().err;
      auto st = read_status(tid);
      if (err == ESRCH || !st) {
        table_.apply(tid, WaitStatus(0));  // exited meanwhile: not an error
        continue;
      }
      if (err == EPERM && st->tracer_pid == getpid()) {
        // Already ours: cloned by a seized thread and seized at birth (TRACECLONE).
        table_.add(tid, TState::kNew);
        continue;
      }
      if (err == EPERM && tid == pid_ && (st->state == 'Z' || st->state == 'X')) {
        // The main thread called pthread_exit: a zombie leader cannot be traced, but the
        // process lives on in its other threads.
        leader_gone_ = true;
        continue;
      }
      failed_tid_ = tid;
      return r.error();
    }
    if (!any_new) {
      break;
    }
    if (pass > 10000) {
      return Error{"threads of pid " + std::to_string(pid_) +
                   " appear faster than they can be seized"};
    }
  }
  if (table_.empty()) {
    return Error{"pid " + std::to_string(pid_) + " has no threads left", ESRCH};
  }
  if (table_.size() != before) {
    logger("attach")->debug("seized {} threads of pid {}{}", table_.size(), pid_,
                            leader_gone_ ? " (its main thread has exited)" : "");
  }
  return {};
}

uint32_t TracedProcess::new_space_id() {
  static std::atomic<uint32_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

std::optional<Waiter::Event> TracedProcess::next_status(std::chrono::milliseconds timeout) {
  return queue_->next_status(*this, timeout);
}

pid_t TracedProcess::space_pid() const {
  if (!leader_gone_) {
    return pid_;
  }
  for (const auto& [tid, t] : table_.all()) {
    if (t.state != TState::kExiting) {
      return tid;
    }
  }
  // Detached already: any live thread will do.
  if (auto tids = list_tasks(pid_)) {
    for (pid_t tid : *tids) {
      if (auto st = read_task_stat(pid_, tid); st && st->state != 'Z' && st->state != 'X') {
        return tid;
      }
    }
  }
  return pid_;
}

Transition TracedProcess::on_status(const Waiter::Event& ev) {
  std::optional<bool> same_group;
  if (table_.find(ev.tid) == nullptr && ev.status.stopped()) {
    if (children_.count(ev.tid) != 0) {
      same_group = false;  // its creator's fork or vfork event named it: a process
    } else {
      auto st = read_status(ev.tid);
      same_group = st && st->tgid == pid_;
    }
  }
  Transition tr = table_.apply(ev.tid, ev.status, same_group);
  using W = Transition::What;
  if (tr.what == W::kNotOurs && ev.status.stopped() && same_group.has_value()) {
    // The first stop of a process a traced thread created; its creator's event may not
    // have arrived yet.
    on_child_process(ev.tid, 0, 0, /*first_stop=*/true);
    return tr;
  }
  if (tr.what == W::kExited) {
    children_.erase(ev.tid);
    for (const auto& o : observers_) {
      o->on_thread_exit(ev.tid);
    }
    return tr;
  }
  if (take_own_signal(ev, tr)) {
    return tr;
  }
  if (tr.first_stop && !observers_.empty()) {
    user_regs_struct regs{};
    if (ptrace(PTRACE_GETREGS, ev.tid, nullptr, &regs) == 0) {
      for (const auto& o : observers_) {
        o->on_new_thread(ev.tid, regs);
      }
    }
  }
  if (tr.what == W::kPtraceEvent) {
    on_creation_event(ev.tid, tr.event);
  }
  return tr;
}

bool TracedProcess::take_own_signal(const Waiter::Event& ev, Transition& tr) {
  if (tr.what != Transition::What::kSignal) {
    return false;
  }
  // profctl's own breakpoint, already handled by its observer: not the target's signal.
  const bool trap =
      tr.signal == SIGTRAP && std::any_of(observers_.begin(), observers_.end(),
                                          [&](const auto& o) { return o->on_trap(ev.tid); });
  // Or the sampling session's CPU timer: a sample, never the program's signal.
  const bool timer = !trap && std::any_of(observers_.begin(), observers_.end(), [&](const auto& o) {
    return o->own_signal(ev.tid, tr.signal);
  });
  if (!trap && !timer) {
    return false;
  }
  if (ev.pending_in_kernel) {
    queue_->consume(ev);
  }
  if (trap) {
    table_.breakpoint_trap(ev.tid);
  } else {
    table_.timer_signal(ev.tid);
  }
  tr.what = Transition::What::kStopped;
  tr.signal = 0;
  return true;
}

void TracedProcess::on_creation_event(pid_t tid, int event) {
  switch (event) {
    case PTRACE_EVENT_CLONE:
    case PTRACE_EVENT_FORK:
    case PTRACE_EVENT_VFORK: {
      unsigned long msg = 0;
      if (ptrace(PTRACE_GETEVENTMSG, tid, nullptr, &msg) != 0 || msg == 0) {
        break;
      }
      const auto child = static_cast<pid_t>(msg);
      bool thread = false;
      if (event == PTRACE_EVENT_CLONE) {
        // clone() without CLONE_THREAD makes a process, not a thread of ours.
        auto st = read_status(child);
        thread = !st || st->tgid == pid_;
      }
      if (thread) {
        table_.add_clone_child(child);
      } else {
        on_child_process(child, tid, event, false);
      }
      break;
    }
    case PTRACE_EVENT_EXEC:
      rebuild_after_exec();
      for (const auto& o : observers_) {
        o->on_exec();
      }
      break;
    default:
      break;
  }
}

void TracedProcess::on_child_process(pid_t child, pid_t parent_tid, int event, bool first_stop) {
  auto it = children_.try_emplace(child).first;
  ChildProcess& c = it->second;
  c.pid = child;
  if (parent_tid != 0) {
    c.parent_tid = parent_tid;
    c.event = event;
  }
  c.first_stop = c.first_stop || first_stop;
  if (parent_tid != 0 && !c.first_stop) {
    // Its first stop may have reached another process of the tree: waiting for it here
    // would hold the child stopped for good.
    ChildClaim claim = ChildClaim::kNone;
    for (const auto& o : observers_) {
      if ((claim = o->claim_child(child, *this)) != ChildClaim::kNone) {
        break;
      }
    }
    switch (claim) {
      case ChildClaim::kFirstStop:
        c.first_stop = true;
        break;
      case ChildClaim::kKnown:
        children_.erase(it);
        return;
      case ChildClaim::kNone:
        break;
    }
  }
  if (c.first_stop && c.parent_tid != 0) {
    // A copy: the hooks wait for the child's statuses, and its exit erases the entry.
    const ChildProcess settled = c;
    settle_child(settled);
    children_.erase(child);
  }
}

void TracedProcess::settle_orphans() {
  std::vector<ChildProcess> orphans;
  for (const auto& [cpid, c] : children_) {
    if (c.first_stop && c.parent_tid == 0) {
      orphans.push_back(c);
    }
  }
  for (const ChildProcess& c : orphans) {
    logger("attach")->debug("child process {} of exited process {}: its creator's event never came",
                            c.pid, pid_);
    settle_child(c);
    children_.erase(c.pid);
  }
}

void TracedProcess::settle_child(const ChildProcess& c) {
  ChildHookArgs args;
  args.pid = c.pid;
  args.parent_tid = c.parent_tid;
  args.event = c.event;
  // kcmp tells for sure whether the child runs in the target's memory (vfork, CLONE_VM).
  args.shares_vm =
      c.event == PTRACE_EVENT_VFORK || ::syscall(SYS_kcmp, c.pid, space_pid(), KCMP_VM, 0, 0) == 0;
  args.followed = std::any_of(observers_.begin(), observers_.end(),
                              [&](const auto& o) { return o->follows_child(args); });
  if (!observers_.empty()) {
    StoppedWorld child(*this, c.pid, {c.pid}, {}, /*resume_at_end=*/false);
    for (const auto& o : observers_) {
      try {
        o->on_child_process(args, child);
      } catch (const std::exception& e) {
        logger("attach")->warn("cleaning child process {}: {}", c.pid, e.what());
      }
    }
  }
  const bool adopted = std::any_of(observers_.begin(), observers_.end(),
                                   [&](const auto& o) { return o->adopt_child(args, *this); });
  if (adopted) {
    logger("attach")->debug("child process {} of thread {} (event {}) followed", c.pid,
                            c.parent_tid, c.event);
    return;  // traced on by its new owner
  }
  // Detached at once: it runs unhindered, as it would without profctl (its SIGSTOP-free
  // first stop needs no signal).
  if (ptrace(PTRACE_DETACH, c.pid, nullptr, nullptr) != 0) {
    logger("attach")->debug("detaching child process {}: {}", c.pid, std::strerror(errno));
  }
  logger("attach")->trace("child process {} of thread {} (event {}{}) detached", c.pid,
                          c.parent_tid, c.event, args.shares_vm ? ", shares memory" : "");
}

std::vector<pid_t> TracedProcess::held_first_stops() const {
  std::vector<pid_t> out;
  for (const auto& [cpid, c] : children_) {
    if (c.first_stop && c.parent_tid == 0) {
      out.push_back(cpid);
    }
  }
  return out;
}

bool TracedProcess::give_up_first_stop(pid_t child) {
  auto it = children_.find(child);
  if (it == children_.end() || !it->second.first_stop || it->second.parent_tid != 0) {
    return false;
  }
  children_.erase(it);
  return true;
}

void TracedProcess::settle_first_stop(pid_t child) {
  auto it = children_.find(child);
  if (it == children_.end()) {
    return;
  }
  const ChildProcess c = it->second;  // a copy: settling can erase the entry
  settle_child(c);
  children_.erase(child);
}

bool TracedProcess::creation_may_be_in_flight() const {
  for (const auto& [tid, t] : table_.all()) {
    // Held by us (its events are handled as they come) or not run yet: not creating.
    if (t.state != TState::kStopped && t.state != TState::kNew && may_be_creating(pid_, tid)) {
      return true;
    }
  }
  return false;
}

void TracedProcess::interrupt_all() {
  for (pid_t tid : table_.tids()) {
    interrupt_one(tid);
  }
}

void TracedProcess::resume_one(pid_t tid, bool detach) {
  const TracedThread* t = table_.find(tid);
  if (t == nullptr || t->state != TState::kStopped) {
    return;
  }
  const long sig = t->pending_signal;
  long r;
  bool listening = false;
  if (detach) {
    // A group-stopped thread detached with no signal stays in group-stop (the kernel
    // re-instates the stop on detach), so a SIGSTOPped target is left as it was found.
    r = ptrace(PTRACE_DETACH, tid, nullptr, sig);
  } else if (t->group_stop && sig == 0) {
    r = ptrace(PTRACE_LISTEN, tid, nullptr, nullptr);
    listening = true;
  } else {
    r = ptrace(PTRACE_CONT, tid, nullptr, sig);
  }
  logger("attach")->trace("thread {}: {} (signal {}){}", tid,
                          detach      ? "detach"
                          : listening ? "listen"
                                      : "cont",
                          sig, r == 0 ? "" : " failed");
  if (r == 0) {
    if (detach) {
      table_.forget(tid);
    } else {
      table_.resumed(tid, listening);
    }
  } else if (errno == ESRCH) {
    table_.exiting(tid);  // killed meanwhile: its exit status is on its way
  }
}

void TracedProcess::interrupt_one(pid_t tid) {
  const TracedThread* t = table_.find(tid);
  if (t == nullptr || (t->state != TState::kRunning && t->state != TState::kListening)) {
    return;
  }
  if (ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) == 0) {
    table_.interrupted(tid);
  } else if (errno == ESRCH) {
    table_.exiting(tid);
  }
}

void TracedProcess::redeliver_and_restop(pid_t tid) {
  // Holding a signal while the world is stopped would put it at risk: if profctl died
  // (SIGKILL) before re-injecting it, the kernel would drop it. So it is re-injected now,
  // and the thread is stopped again right after (its handler may run first).
  resume_one(tid, false);
  interrupt_one(tid);
}

std::vector<pid_t> TracedProcess::stop_all(std::chrono::milliseconds timeout,
                                           const std::vector<pid_t>& first) {
  StopCollection c;
  c.t0 = monotonic_ns();
  // Interrupt everyone first, then collect the stops: the threads stop in parallel. Those
  // on a CPU go first: until they stop they hold the CPUs the others need to reach theirs.
  c.order.reserve(table_.size() + first.size());
  auto interrupt = [&](pid_t tid) {
    interrupt_one(tid);
    const TracedThread* t = table_.find(tid);
    if (t != nullptr && t->state == TState::kInterrupted) {
      c.order.push_back(tid);
    }
  };
  for (pid_t tid : first) {
    interrupt(tid);
  }
  for (pid_t tid : table_.tids()) {
    interrupt(tid);
  }
  // A thread that missed an earlier stop's deadline (uninterruptible sleep, a vfork parent)
  // is not waited for that long again: once only such threads are missing, 100 ms more. One
  // that has come out of it reports the stop it owes at once.
  std::erase_if(unresponsive_, [&](pid_t tid) {
    const TracedThread* t = table_.find(tid);
    return t == nullptr || (t->state != TState::kInterrupted && t->state != TState::kNew);
  });
  c.stuck = unresponsive_.size();
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + timeout;
  const auto stuck_deadline = std::min(deadline, start + std::chrono::milliseconds(100));
  collect_all_stops(c, deadline, stuck_deadline);
  last_collection_ = c;
  std::vector<pid_t> missing;
  for (const auto& [tid, t] : table_.all()) {
    if (t.state != TState::kStopped) {
      missing.push_back(tid);
      if (t.state == TState::kInterrupted || t.state == TState::kNew) {
        unresponsive_.insert(tid);
      }
    }
  }
  return missing;
}

// The stops are collected in passes over the threads still awaited, each asked alone
// (waitid P_PID: O(1) in the kernel, where a wait for any child walks every tracee, which
// made collecting n stops O(n^2)). Between passes profctl naps instead of being woken by
// every stop: while it runs (SCHED_FIFO) the threads queued on its CPU cannot reach their
// stop. The threads stop roughly in the order they were interrupted, so a pass goes in that
// order and ends after a few misses in a row; every few ms, and past the deadline, a pass
// asks every thread. Once only a few are awaited, each stop wakes profctl.
void TracedProcess::collect_all_stops(StopCollection& c,
                                      std::chrono::steady_clock::time_point deadline,
                                      std::chrono::steady_clock::time_point stuck_deadline) {
  constexpr size_t kMisses = 8;
  constexpr size_t kFew = 16;
  constexpr std::chrono::nanoseconds kNap = std::chrono::microseconds(50);
  constexpr std::chrono::nanoseconds kMaxNap = std::chrono::milliseconds(1);
  std::chrono::nanoseconds nap = kNap;
  constexpr auto kFullPassEvery = std::chrono::milliseconds(2);
  bool look = true;
  auto last_full = std::chrono::steady_clock::now();
  size_t late = 0;
  while (table_.awaiting_stop() > 0 && !c.exec) {
    const auto now = std::chrono::steady_clock::now();
    const bool past = now >= (table_.awaiting_stop() <= c.stuck ? stuck_deadline : deadline);
    const bool full = past || now - last_full >= kFullPassEvery;
    size_t handled = 0;
    if (look || full) {
      handled = collect_stops(c, full ? SIZE_MAX : kMisses);
      ++c.passes;
      last_full = full ? now : last_full;
    }
    if (table_.awaiting_stop() == 0 || c.exec) {
      break;
    }
    if (past) {
      // Past the deadline the stops already reported are still collected, without waiting:
      // a thread that stopped can be detached. Bounded, since signals can keep coming.
      if (handled == 0 || ++late > 2 * table_.size() + 8) {
        break;
      }
      continue;
    }
    // SIGCHLD (taken by the nap) says a stop arrived since the last pass began.
    const bool few = table_.awaiting_stop() <= kFew;
    // No stop since the last nap: the next is twice as long (the stopping threads need
    // the CPU; a CPU idle for 50 us at a time never pulls the runnable threads queued on
    // the other one, bench/RESULTS.md).
    nap = handled > 0 ? kNap : std::min(2 * nap, kMaxNap);
    look = queue_->nap(few ? std::chrono::nanoseconds(kFullPassEvery) : nap, few);
    ++c.naps;
  }
}

size_t TracedProcess::collect_stops(StopCollection& c, size_t max_misses) {
  auto log = logger("attach");
  // In interrupt order; then any other awaited thread (one born during the stop).
  std::erase_if(c.order, [&](pid_t tid) {
    const TracedThread* t = table_.find(tid);
    return t == nullptr || (t->state != TState::kInterrupted && t->state != TState::kNew);
  });
  std::vector<pid_t> awaited = c.order;
  if (awaited.size() < table_.awaiting_stop()) {
    for (const auto& [tid, t] : table_.all()) {
      if ((t.state == TState::kInterrupted || t.state == TState::kNew) &&
          std::find(c.order.begin(), c.order.end(), tid) == c.order.end()) {
        awaited.push_back(tid);
        c.order.push_back(tid);
      }
    }
  }
  size_t handled = 0;
  size_t misses = 0;
  c.cut_short = false;
  for (pid_t tid : awaited) {
    auto ev = queue_->next_status_of(tid, std::chrono::milliseconds(0));
    if (!ev) {
      if (++misses >= max_misses) {
        c.cut_short = true;
        break;
      }
      continue;
    }
    misses = 0;
    ++handled;
    if (unresponsive_.erase(ev->tid) > 0) {
      --c.stuck;
    }
    Transition tr = on_status(*ev);
    if (log->should_log(spdlog::level::trace)) {
      std::ostringstream os;
      os << ev->status;
      log->trace("{:.1f} us: thread {} {}", (monotonic_ns() - c.t0) / 1e3, ev->tid, os.str());
    }
    using W = Transition::What;
    if (tr.what == W::kSignal) {
      redeliver_and_restop(ev->tid);  // awaited again, in a later pass
    } else if (tr.what == W::kPtraceEvent && tr.event == PTRACE_EVENT_EXEC) {
      // Every other thread vanished; the exec'ing one is stopped: the world is this one.
      c.exec = true;
      break;
    }
  }
  return handled;
}

void TracedProcess::resume_all(bool detach) {
  for (pid_t tid : table_.tids()) {
    resume_one(tid, detach);
  }
}

std::vector<pid_t> TracedProcess::stopped_tids() const {
  std::vector<pid_t> stopped;
  for (const auto& [tid, t] : table_.all()) {
    if (t.state == TState::kStopped) {
      stopped.push_back(tid);
    }
  }
  return stopped;
}

Result<std::unique_ptr<StoppedWorld>> TracedProcess::stop_world(std::chrono::milliseconds timeout) {
  if (!attached_) {
    return Error{"pid " + std::to_string(pid_) + " is no longer traced"};
  }
  if (auto r = seize_all(); !r) {
    return r.error();
  }
  std::vector<pid_t> missing = stop_all(timeout);
  return std::unique_ptr<StoppedWorld>(
      new StoppedWorld(*this, space_pid(), stopped_tids(), std::move(missing), true));
}

std::map<pid_t, ThreadInfo> TracedProcess::read_thread_infos() const {
  // Thread state before the stop, and what a blocked thread waits in.
  std::map<pid_t, ThreadInfo> infos;
  for (pid_t tid : table_.tids()) {
    ThreadInfo info;
    info.tid = tid;
    if (auto st = read_task_stat(pid_, tid)) {
      info.name = st->comm;
      info.state = st->state;
      info.cpu_ns =
          read_task_runtime_ns(pid_, tid).value_or(ticks_to_ns(st->utime_ticks + st->stime_ticks));
      if (st->state != 'R') {
        info.syscall = read_task_syscall(pid_, tid);
      }
    }
    infos.emplace(tid, std::move(info));
  }
  return infos;
}

size_t TracedProcess::stack_copy_estimate(const std::map<pid_t, ThreadInfo>& infos,
                                          const std::vector<MapEntry>& maps, size_t max_bytes) {
  // A thread blocked in a syscall showed its stack pointer in /proc: its copy will be about
  // the rest of that mapping. A running one's is a guess; a copy that does not fit gets a
  // buffer of its own.
  constexpr uint64_t kGuess = 16 * 1024;
  constexpr uint64_t kMaxBlock = 64u << 20;
  uint64_t total = 0;
  for (const auto& [tid, info] : infos) {
    uint64_t want = kGuess;
    if (info.syscall && info.syscall->sp != 0) {
      if (const MapEntry* m = find_mapping(maps, info.syscall->sp)) {
        want = m->end - info.syscall->sp;
      }
    }
    total += std::min<uint64_t>(want, max_bytes);
  }
  return static_cast<size_t>(std::min(total, kMaxBlock));
}

std::vector<Snapshot> TracedProcess::copy_stopped(StackReader& reader,
                                                  const std::vector<MapEntry>& maps,
                                                  size_t stack_bytes, PauseTimes& pause) {
  // Registers, then every stack in one batched read.
  std::vector<Snapshot> snaps;
  snaps.reserve(table_.size());
  for (const auto& [tid, t] : table_.all()) {
    if (t.state != TState::kStopped) {
      continue;
    }
    Snapshot s;
    s.pid = pid_;
    s.tid = tid;
    s.space = space_id_;
    if (ptrace(PTRACE_GETREGS, tid, nullptr, &s.regs) != 0) {
      continue;
    }
    snaps.push_back(std::move(s));
  }
  pause.stack_bytes = reader.read_stacks(snaps, maps, stack_bytes);
  for (Snapshot& s : snaps) {
    for (const auto& o : observers_) {
      o->filter_snapshot(s);
    }
  }
  return snaps;
}

void TracedProcess::assemble_capture(WorldCapture& out, std::map<pid_t, ThreadInfo>& infos,
                                     std::vector<Snapshot>& snaps,
                                     const std::vector<pid_t>& missing,
                                     const CaptureOptions& opts) const {
  std::map<pid_t, Snapshot*> by_tid;
  for (auto& s : snaps) {
    by_tid[s.tid] = &s;
  }
  auto wanted = [&](pid_t tid) { return opts.only_tids.empty() || opts.only_tids.count(tid); };
  for (auto& [tid, info] : infos) {
    if (!wanted(tid)) {
      continue;
    }
    ThreadCapture tc;
    tc.info = std::move(info);
    if (auto it = by_tid.find(tid); it != by_tid.end()) {
      tc.snap = std::move(*it->second);
    } else if (table_.gone(tid) ||
               std::find(missing.begin(), missing.end(), tid) == missing.end()) {
      continue;  // exited during the stop: dropped, not an error
    } else {
      tc.note = "thread did not stop within " + std::to_string(opts.stop_timeout.count()) +
                " ms (state " + std::string(1, tc.info.state) + ")";
      out.notes.push_back("thread " + std::to_string(tid) + ": " + tc.note);
    }
    out.threads.push_back(std::move(tc));
  }
  // Threads born during the stop (seized at birth) have no /proc reading from before it.
  for (auto& [tid, sp] : by_tid) {
    if (infos.count(tid) || !wanted(tid)) {
      continue;
    }
    ThreadCapture tc;
    tc.info.tid = tid;
    tc.info.state = 'R';
    if (auto st = read_task_stat(pid_, tid)) {
      tc.info.name = st->comm;
      tc.info.cpu_ns = ticks_to_ns(st->utime_ticks + st->stime_ticks);
    }
    tc.snap = std::move(*sp);
    out.threads.push_back(std::move(tc));
  }
  std::sort(out.threads.begin(), out.threads.end(),
            [](const ThreadCapture& a, const ThreadCapture& b) { return a.info.tid < b.info.tid; });
}

Result<WorldCapture> TracedProcess::capture_world(const CaptureOptions& opts) {
  WorldCapture out;
  // Catch threads created since seize() (by threads that were not yet seized).
  if (auto r = seize_all(); !r) {
    return r.error();
  }
  const pid_t space = space_pid();
  auto maps_text = read_maps_text(space);
  if (!maps_text) {
    return maps_text.error();
  }
  out.maps_text = std::move(*maps_text);
  const std::vector<MapEntry> maps = parse_maps(out.maps_text);
  std::map<pid_t, ThreadInfo> infos = read_thread_infos();
  std::vector<pid_t> running;
  for (const auto& [tid, info] : infos) {
    if (info.state == 'R') {
      running.push_back(tid);
    }
  }
  StackReader reader(space);
  reader.reserve(stack_copy_estimate(infos, maps, opts.stack_bytes));

  // The pause: stop, copy, resume, with nothing else in it.
  TerminationSignalsBlocked blocked;
  ScopedRealtime realtime;
  const uint64_t t0 = monotonic_ns();
  const std::vector<pid_t> missing = stop_all(opts.stop_timeout, running);
  const uint64_t t1 = monotonic_ns();
  std::map<pid_t, bool> was_group_stopped;
  for (const auto& [tid, t] : table_.all()) {
    if (t.state == TState::kStopped) {
      was_group_stopped[tid] = t.group_stop;
    }
  }
  std::vector<Snapshot> snaps = copy_stopped(reader, maps, opts.stack_bytes, out.pause);
  const uint64_t t2 = monotonic_ns();
  // Observers with work to undo (probes) must run before the last detach: resume now,
  // detach after.
  const bool detach_now = opts.detach && !needs_detach_stop();
  resume_all(detach_now);
  const uint64_t t3 = monotonic_ns();
  if (opts.detach && !detach_now) {
    detach_all();
  }
  if (opts.detach && table_.empty()) {
    attached_ = false;
  }
  out.pause.stop_ns = t1 - t0;
  out.pause.capture_ns = t2 - t1;
  out.pause.resume_ns = t3 - t2;
  out.pause.world_stopped_ns = t3 - t0;

  // Seizing a group-stopped thread turns its /proc state from T into t; its group-stop
  // report says how it was found.
  for (auto& [tid, gs] : was_group_stopped) {
    if (auto it = infos.find(tid); gs && it != infos.end() && it->second.state == 't') {
      it->second.state = 'T';
    }
  }
  assemble_capture(out, infos, snaps, missing, opts);
  logger("attach")->debug(
      "world stopped {:.3f} ms for {} threads (stop {:.3f} in {} passes and {} naps, capture "
      "{:.3f}, resume {:.3f}); {} stack bytes",
      out.pause.world_stopped_ns / 1e6, snaps.size(), out.pause.stop_ns / 1e6,
      last_collection_.passes, last_collection_.naps, out.pause.capture_ns / 1e6,
      out.pause.resume_ns / 1e6, out.pause.stack_bytes);
  return out;
}

bool TracedProcess::needs_detach_stop() const {
  return std::any_of(observers_.begin(), observers_.end(),
                     [](const auto& o) { return o->needs_detach_stop(); });
}

void TracedProcess::detach(std::chrono::milliseconds stop_timeout) { detach_all(stop_timeout); }

void TracedProcess::detach_all(std::chrono::milliseconds stop_timeout) {
  const auto deadline = std::chrono::steady_clock::now() + stop_timeout;
  if (!attached_) {
    // Exited (or detached): children it created may still be held at their first stop.
    release_children(deadline);
    return;
  }
  attached_ = false;
  TerminationSignalsBlocked blocked;
  // PTRACE_DETACH needs a stopped tracee: stop every thread first.
  run_detach_observers(deadline);
  resume_all(/*detach=*/true);
  // A thread that never stopped stays traced until profctl exits; the kernel detaches it
  // then (exit_ptrace), with nothing patched and no signal held.
  for (const auto& [tid, t] : table_.all()) {
    left_traced_ += t.state == TState::kExiting ? 0 : 1;
  }
  if (!table_.empty()) {
    logger("attach")->warn("{} threads of pid {} did not stop: left for the kernel to release",
                           table_.size(), pid_);
  }
  table_.clear();
  release_children(deadline);
  // Nothing is left to observe: the observers this process kept alive (the probes, until
  // they were removed) go now.
  observers_.clear();
}

void TracedProcess::run_detach_observers(std::chrono::steady_clock::time_point deadline) {
  // Observers with work to undo run in the last stopped world; one that needs the target to
  // run a little (a thread inside code it must not remove yet) gets the world resumed and
  // stopped again, a bounded number of times. Each runs on this one detach only.
  std::vector<std::shared_ptr<TraceObserver>> undo;
  std::copy_if(observers_.begin(), observers_.end(), std::back_inserter(undo),
               [](const auto& o) { return o->needs_detach_stop(); });
  std::vector<bool> done(undo.size(), false);
  for (int round = 0;; ++round) {
    // The first stop waits up to the deadline; a thread that did not stop by then is not
    // waited for again, the others (resumed for a moment) stop again within 100 ms.
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    stop_all(round == 0 ? left : std::max(left, std::chrono::milliseconds(100)));
    bool all_done = true;
    if (!undo.empty()) {
      StoppedWorld world(*this, space_pid(), stopped_tids(), {}, /*resume_at_end=*/false);
      for (size_t i = 0; i < undo.size(); ++i) {
        if (done[i]) {
          continue;
        }
        try {
          done[i] = undo[i]->before_detach(world) || round >= 200;
        } catch (const std::exception& e) {
          logger("attach")->warn("detach hook: {}", e.what());
          done[i] = true;
        }
        all_done = all_done && done[i];
      }
    }
    if (all_done || table_.empty()) {
      return;
    }
    resume_all(false);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void TracedProcess::release_children(std::chrono::steady_clock::time_point deadline) {
  // Halves of a creation: a creator's event whose child has not reached its first stop yet
  // (a process just created reaches it at once), or a first stop whose creator's event never
  // came. Each child is detached at its first stop; one still on its way is waited for.
  size_t late = 0;
  while (std::any_of(children_.begin(), children_.end(),
                     [](const auto& kv) { return !kv.second.first_stop; })) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 && ++late > children_.size() + 8) {
      break;
    }
    auto ev = next_status(std::max(left, std::chrono::milliseconds(0)));
    if (!ev) {
      break;
    }
    // A child's first stop settles it (detached: nobody adopts during a detach), an exit
    // drops it; a thread of ours born just before the detach is detached at its first stop.
    on_status(*ev);
    if (table_.find(ev->tid) != nullptr) {
      resume_one(ev->tid, /*detach=*/true);
    }
  }
  for (const auto& [cpid, c] : children_) {
    if (c.first_stop && ptrace(PTRACE_DETACH, cpid, nullptr, nullptr) == 0) {
      continue;
    }
    ++left_traced_;
    logger("attach")->warn(
        "child process {} of pid {} did not reach its first stop: left for "
        "the kernel to release",
        cpid, pid_);
  }
  children_.clear();
}

TracedProcess::~TracedProcess() {
  try {
    detach_all();
  } catch (...) {
    // Out of memory while detaching: profctl's exit lets the kernel detach the rest.
  }
  if (own_queue_ == nullptr && queue_ != nullptr) {
    queue_->forget(*this);  // a followed child: the tree's queue lives on
  }
}

}  // namespace profctl
