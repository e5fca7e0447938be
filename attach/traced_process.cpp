#include "attach/traced_process.h"

#include <sched.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <sstream>

#include "attach/realtime.h"
#include "attach/stack_reader.h"
#include "base/log.h"

namespace profctl {
namespace {

constexpr uint64_t kPfKthread = 0x00200000;  // include/linux/sched.h

uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

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

std::variant<std::unique_ptr<TracedProcess>, AttachError> TracedProcess::seize(pid_t pid) {
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
  if (status->state == 'Z' || status->state == 'X') {
    // A zombie leader can still have live threads (the main thread called pthread_exit).
    bool live = false;
    if (auto tids = list_tasks(pid)) {
      for (pid_t t : *tids) {
        auto ts = read_task_stat(pid, t);
        live = live || (ts && ts->state != 'Z' && ts->state != 'X');
      }
    }
    if (!live) {
      return AttachError{AttachFailure::kZombie,
                         "pid " + spid +
                             " is a zombie: it has exited and waits for its parent (pid " +
                             std::to_string(status->ppid) + ") to reap it",
                         "there is nothing left to dump"};
    }
  }
  if (status->tracer_pid != 0) {
    return AttachError{AttachFailure::kAlreadyTraced,
                       "pid " + spid + " is already traced by pid " +
                           std::to_string(status->tracer_pid) + " (" + comm_of(status->tracer_pid) +
                           ")",
                       "detach that tracer (gdb, strace, another profctl) first"};
  }
  std::unique_ptr<TracedProcess> tp(new TracedProcess(pid));
  if (auto r = tp->seize_all(); !r) {
    int err = r.error().err;
    tp->detach_all();
    if (err == EPERM || err == EACCES) {
      // Recheck: a tracer may have attached between our check and our seize.
      if (auto again = read_status(pid);
          again && again->tracer_pid != 0 && again->tracer_pid != getpid()) {
        return AttachError{AttachFailure::kAlreadyTraced,
                           "pid " + spid + " is already traced by pid " +
                               std::to_string(again->tracer_pid) + " (" +
                               comm_of(again->tracer_pid) + ")",
                           "detach that tracer first"};
      }
      return ptrace_scope_error(pid);
    }
    if (err == ESRCH) {
      return AttachError{AttachFailure::kNoSuchProcess,
                         "pid " + spid + " exited while profctl attached", ""};
    }
    return AttachError{AttachFailure::kOther, r.error().message(), ""};
  }
  return tp;
}

bool TracedProcess::seize_one(pid_t tid) {
  // TRACECLONE: a thread cloned by a seized thread is seized by the kernel at birth, so no
  // thread created during a stop escapes it.
  // TRACEEXEC: an exec is reported as an event, not as a stray SIGTRAP.
  if (ptrace(PTRACE_SEIZE, tid, nullptr, PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC) == 0) {
    threads_.emplace(tid, Thread{});
    return true;
  }
  return false;
}

Result<void> TracedProcess::seize_all() {
  const size_t before = threads_.size();
  // Threads can be created while we seize: list again until a pass finds nothing new.
  for (int pass = 0;; ++pass) {
    auto tids = list_tasks(pid_);
    if (!tids) {
      return tids.error();
    }
    bool any_new = false;
    for (pid_t tid : *tids) {
      if (threads_.count(tid) || gone_.count(tid)) {
        continue;
      }
      any_new = true;
      if (seize_one(tid)) {
        continue;
      }
      int err = errno;
      if (err == ESRCH) {
        gone_.insert(tid);  // exited meanwhile: not an error
        continue;
      }
      if (err == EPERM && !threads_.empty()) {
        // Already ours: cloned by a seized thread and auto-attached (TRACECLONE).
        auto st = read_status(tid);
        if (st && st->tracer_pid == getpid()) {
          threads_.emplace(tid, Thread{});
          continue;
        }
        if (!st) {
          gone_.insert(tid);
          continue;
        }
      }
      if (threads_.empty() || err == EPERM) {
        return errno_error("PTRACE_SEIZE " + std::to_string(tid), err);
      }
      gone_.insert(tid);
    }
    if (!any_new) {
      break;
    }
    if (pass > 10000) {
      return Error{"threads of pid " + std::to_string(pid_) +
                   " appear faster than they can be seized"};
    }
  }
  if (threads_.empty()) {
    return Error{"pid " + std::to_string(pid_) + " has no threads left", ESRCH};
  }
  if (threads_.size() != before) {
    logger("attach")->debug("seized {} threads of pid {}", threads_.size(), pid_);
  }
  return {};
}

bool TracedProcess::on_status(const Waiter::Event& ev) {
  auto it = threads_.find(ev.tid);
  using K = WaitStatus::Kind;
  if (it == threads_.end()) {
    // A thread born to a seized thread during the stop reports its first stop, possibly
    // before its parent's PTRACE_EVENT_CLONE. It is ours if it is in our thread group.
    if (ev.status.kind() == K::kEventStop) {
      auto st = read_status(ev.tid);
      if (st && st->tgid == pid_) {
        threads_.emplace(ev.tid, Thread{true, false, 0});
        return true;
      }
    }
    return false;
  }
  Thread& t = it->second;
  switch (ev.status.kind()) {
    case K::kExited:
    case K::kKilled:
      threads_.erase(it);
      gone_.insert(ev.tid);
      return true;
    case K::kGroupStop:
      t.stopped = true;
      t.group_stop = true;
      return true;
    case K::kEventStop:
      t.stopped = true;
      return true;
    case K::kSignalStop:
      // A signal for the target arrived: it is held here and must be re-delivered.
      t.stopped = true;
      t.pending_signal = ev.status.signal();
      return true;
    case K::kPtraceEvent:
      t.stopped = true;
      if (ev.status.ptrace_event() == PTRACE_EVENT_CLONE) {
        unsigned long child = 0;
        if (ptrace(PTRACE_GETEVENTMSG, ev.tid, nullptr, &child) == 0 && child > 0 &&
            !threads_.count(static_cast<pid_t>(child))) {
          threads_.emplace(static_cast<pid_t>(child), Thread{});
        }
      }
      return true;
    case K::kSyscallStop:
    case K::kUnknown:
      t.stopped = true;
      return true;
  }
  return true;
}

void TracedProcess::resume_one(pid_t tid, Thread& t, bool detach) {
  long sig = t.pending_signal;
  long r;
  if (detach) {
    // A group-stopped thread detached with no signal stays in group-stop (the kernel
    // re-instates the stop on detach), so a SIGSTOPped target is left as it was found.
    r = ptrace(PTRACE_DETACH, tid, nullptr, sig);
  } else if (t.group_stop && sig == 0) {
    r = ptrace(PTRACE_LISTEN, tid, nullptr, nullptr);
  } else {
    r = ptrace(PTRACE_CONT, tid, nullptr, sig);
  }
  if (r == 0) {
    t.pending_signal = 0;
    t.stopped = false;
  } else if (errno == ESRCH) {
    t.stopped = false;  // gone (or never stopped): nothing to resume
  }
}

Result<WorldCapture> TracedProcess::capture_world(const CaptureOptions& opts) {
  auto log = logger("attach");
  WorldCapture out;

  // Catch threads created since seize() (by threads that were not yet seized).
  if (auto r = seize_all(); !r) {
    return r.error();
  }
  auto maps_text = read_maps_text(pid_);
  if (!maps_text) {
    return maps_text.error();
  }
  out.maps_text = std::move(*maps_text);
  std::vector<MapEntry> maps = parse_maps(out.maps_text);

  // Thread state before the stop, and what a blocked thread waits in.
  std::map<pid_t, ThreadInfo> infos;
  for (auto& [tid, t] : threads_) {
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

  TerminationSignalsBlocked blocked;
  ScopedRealtime realtime;
  const uint64_t t0 = now_ns();
  // Interrupt everyone first, then collect the stops: the threads stop in parallel.
  for (auto& [tid, t] : threads_) {
    if (!t.stopped && ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0 && errno == ESRCH) {
      gone_.insert(tid);
    }
  }
  // Recounted only when a status arrives (threads can appear and go meanwhile).
  auto pending = [&] {
    size_t n = 0;
    for (auto& [tid, t] : threads_) {
      n += t.stopped ? 0 : 1;
    }
    return n;
  };
  size_t not_stopped = pending();
  auto deadline = std::chrono::steady_clock::now() + opts.stop_timeout;
  std::vector<Waiter::Event> foreign;  // not ours: kept for whoever owns that child
  while (not_stopped > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      break;
    }
    auto ev = waiter_.next(left);
    if (!ev) {
      break;
    }
    if (!on_status(*ev)) {
      foreign.push_back(*ev);
    }
    auto it = threads_.find(ev->tid);
    bool simple = it != threads_.end() && it->second.stopped &&
                  ev->status.kind() != WaitStatus::Kind::kPtraceEvent;
    not_stopped = simple && not_stopped > 0 ? not_stopped - 1 : pending();
    if (log->should_log(spdlog::level::trace)) {
      std::ostringstream os;
      os << ev->status;
      log->trace("{:.1f} us: thread {} {}", (now_ns() - t0) / 1e3, ev->tid, os.str());
    }
  }
  for (auto& ev : foreign) {
    waiter_.push_back(ev);
  }
  // A new thread whose parent reported PTRACE_EVENT_CLONE was interrupted by nobody: it
  // stops by itself (auto-attach stop), which the loop above has already collected.
  const uint64_t t1 = now_ns();

  // Registers, then every stack in one batched read.
  std::vector<Snapshot> snaps;
  snaps.reserve(threads_.size());
  for (auto& [tid, t] : threads_) {
    if (!t.stopped) {
      continue;
    }
    Snapshot s;
    s.pid = pid_;
    s.tid = tid;
    if (ptrace(PTRACE_GETREGS, tid, nullptr, &s.regs) != 0) {
      continue;
    }
    snaps.push_back(std::move(s));
  }
  StackReader reader(pid_);
  out.pause.stack_bytes = reader.read_stacks(snaps, maps, opts.stack_bytes);
  const uint64_t t2 = now_ns();

  for (auto& [tid, t] : threads_) {
    if (t.stopped) {
      resume_one(tid, t, opts.detach);
    }
  }
  // Seizing a group-stopped thread turns its /proc state from T into t; its group-stop
  // report says how it was found.
  for (auto& [tid, t] : threads_) {
    if (auto it = infos.find(tid); t.group_stop && it != infos.end() && it->second.state == 't') {
      it->second.state = 'T';
    }
  }
  const uint64_t t3 = now_ns();
  if (opts.detach) {
    // Detached threads are no longer ours; one that never stopped is detached below.
    for (auto it = threads_.begin(); it != threads_.end();) {
      it = it->second.stopped ? std::next(it) : threads_.erase(it);
    }
    if (threads_.empty()) {
      attached_ = false;
    }
  }

  out.pause.stop_ns = t1 - t0;
  out.pause.capture_ns = t2 - t1;
  out.pause.resume_ns = t3 - t2;
  out.pause.world_stopped_ns = t3 - t0;

  std::map<pid_t, Snapshot*> by_tid;
  for (auto& s : snaps) {
    by_tid[s.tid] = &s;
  }
  for (auto& [tid, info] : infos) {
    if (!opts.only_tids.empty() && !opts.only_tids.count(tid)) {
      continue;
    }
    ThreadCapture tc;
    tc.info = std::move(info);
    if (auto it = by_tid.find(tid); it != by_tid.end()) {
      tc.snap = std::move(*it->second);
    } else if (gone_.count(tid)) {
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
    if (infos.count(tid) || (!opts.only_tids.empty() && !opts.only_tids.count(tid))) {
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
  log->debug(
      "world stopped {:.3f} ms for {} threads (stop {:.3f}, capture {:.3f}, resume {:.3f}); "
      "{} stack bytes",
      out.pause.world_stopped_ns / 1e6, snaps.size(), out.pause.stop_ns / 1e6,
      out.pause.capture_ns / 1e6, out.pause.resume_ns / 1e6, out.pause.stack_bytes);
  return out;
}

void TracedProcess::detach_all() {
  if (!attached_) {
    return;
  }
  attached_ = false;
  // PTRACE_DETACH needs a stopped tracee: stop the running ones first (the signals they
  // report meanwhile are held in pending_signal and re-delivered by the detach).
  for (auto& [tid, t] : threads_) {
    if (!t.stopped) {
      ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
    }
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  std::vector<Waiter::Event> foreign;
  for (;;) {
    bool all = true;
    for (auto& [tid, t] : threads_) {
      all = all && t.stopped;
    }
    if (all || std::chrono::steady_clock::now() >= deadline) {
      break;
    }
    auto ev = waiter_.next(std::chrono::milliseconds(200));
    if (!ev) {
      continue;
    }
    if (!on_status(*ev)) {
      foreign.push_back(*ev);
    }
  }
  for (auto& ev : foreign) {
    waiter_.push_back(ev);
  }
  for (auto& [tid, t] : threads_) {
    if (t.stopped) {
      resume_one(tid, t, /*detach=*/true);
    }
  }
  // A thread that never stopped stays traced until profctl exits; the kernel detaches it
  // then (exit_ptrace), with nothing patched and no signal held.
  threads_.clear();
}

TracedProcess::~TracedProcess() {
  try {
    detach_all();
  } catch (...) {
    // Out of memory while detaching: profctl's exit lets the kernel detach the rest.
  }
}

std::vector<pid_t> TracedProcess::tids() const {
  std::vector<pid_t> out;
  out.reserve(threads_.size());
  for (auto& [tid, t] : threads_) {
    out.push_back(tid);
  }
  return out;
}

}  // namespace profctl
