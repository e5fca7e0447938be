// TracedProcess, the sampling side: per-thread snapshots and the event pump (clone, exit,
// exec, signals for the target). Stop-the-world lives in traced_process.cpp.
#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "attach/stack_reader.h"
#include "attach/traced_process.h"
#include "base/fd.h"
#include "base/log.h"

namespace profctl {
namespace {

uint64_t mono_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

std::variant<std::unique_ptr<TracedProcess>, AttachError> TracedProcess::launch(
    const std::vector<std::string>& argv) {
  if (argv.empty()) {
    return AttachError{AttachFailure::kOther, "no command to run", "profctl run -- CMD ARGS..."};
  }
  int pipefd[2];
  if (pipe2(pipefd, O_CLOEXEC) != 0) {
    return AttachError{AttachFailure::kOther, std::string("pipe: ") + std::strerror(errno), ""};
  }
  Fd rd(pipefd[0]);
  Fd wr(pipefd[1]);
  std::vector<char*> cargv;
  cargv.reserve(argv.size() + 1);
  for (auto& a : argv) {
    cargv.push_back(const_cast<char*>(a.c_str()));
  }
  cargv.push_back(nullptr);
  pid_t pid = fork();
  if (pid < 0) {
    return AttachError{AttachFailure::kOther, std::string("fork: ") + std::strerror(errno), ""};
  }
  if (pid == 0) {
    // Child: wait, stopped, until the parent has seized us; then exec. Only async-signal-
    // safe calls from here on.
    raise(SIGSTOP);
    execvp(cargv[0], cargv.data());
    int err = errno;
    (void)!write(wr.get(), &err, sizeof err);
    _exit(127);
  }
  (void)wr.close();
  int st = 0;
  if (waitpid(pid, &st, WUNTRACED) != pid || !WIFSTOPPED(st)) {
    return AttachError{AttachFailure::kOther, "the command did not start", ""};
  }
  std::unique_ptr<TracedProcess> tp(new TracedProcess(pid));
  // EXITKILL is right here and only here: the program exists because profctl ran it.
  if (ptrace(PTRACE_SEIZE, pid, nullptr,
             PTRACE_O_TRACECLONE | PTRACE_O_TRACEEXEC | PTRACE_O_EXITKILL) != 0) {
    int err = errno;
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return AttachError{AttachFailure::kPermission,
                       std::string("cannot trace the command: ") + std::strerror(err), ""};
  }
  tp->threads_.emplace(pid, Thread{});
  kill(pid, SIGCONT);
  // Walk the child from its stop to its exec: group-stop trap, SIGCONT, then the exec.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    auto ev = tp->waiter_.next_for(pid, std::chrono::milliseconds(500));
    if (!ev) {
      if (std::chrono::steady_clock::now() > deadline) {
        return AttachError{AttachFailure::kOther, "the command did not reach exec", ""};
      }
      continue;
    }
    using K = WaitStatus::Kind;
    switch (ev->status.kind()) {
      case K::kExited:
      case K::kKilled: {
        tp->threads_.clear();
        tp->attached_ = false;
        int err = 0;
        if (read(rd.get(), &err, sizeof err) == sizeof err) {
          return AttachError{AttachFailure::kOther,
                             "cannot run '" + argv[0] + "': " + std::strerror(err),
                             "check the command name and PATH"};
        }
        return AttachError{AttachFailure::kOther, "the command exited before it started", ""};
      }
      case K::kPtraceEvent:
        if (ev->status.ptrace_event() == PTRACE_EVENT_EXEC) {
          tp->threads_[pid].stopped = true;
          return tp;  // stopped at its first instruction; the caller resumes it
        }
        ptrace(PTRACE_CONT, pid, nullptr, nullptr);
        break;
      case K::kSignalStop:
        ptrace(PTRACE_CONT, pid, nullptr, ev->status.signal() == SIGSTOP ? 0 : ev->status.signal());
        break;
      default:
        ptrace(PTRACE_CONT, pid, nullptr, nullptr);
        break;
    }
  }
}

std::optional<Snapshot> TracedProcess::snapshot_stopped(pid_t tid, size_t stack_bytes) {
  std::vector<Snapshot> one(1);
  one[0].pid = pid_;
  one[0].tid = tid;
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &one[0].regs) != 0) {
    return std::nullopt;
  }
  if (maps_.empty() || find_mapping(maps_, one[0].regs.rsp) == nullptr) {
    if (auto text = read_maps_text(pid_)) {
      maps_ = parse_maps(*text);
    }
  }
  StackReader reader(pid_);
  reader.read_stacks(one, maps_, stack_bytes);
  return std::move(one[0]);
}

bool TracedProcess::request_sample(pid_t tid) {
  auto it = threads_.find(tid);
  if (it == threads_.end()) {
    return false;
  }
  Thread& t = it->second;
  if (t.sample_requested_ns != 0) {
    return true;
  }
  t.sample_requested_ns = mono_ns();
  if (t.stopped) {
    // Held at an event right now (rare): its stop is here already.
    events_.push_back(take_sample(tid, t));
    return true;
  }
  if (ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0) {
    t.sample_requested_ns = 0;
    return false;
  }
  return true;
}

TracedProcess::TraceEvent TracedProcess::take_sample(pid_t tid, Thread& t) {
  const uint64_t t_stop = mono_ns();
  TraceEvent out(TraceEvent::Kind::kSample, tid);
  out.sample = snapshot_stopped(tid, stack_bytes_);
  out.stop_ns = t_stop - t.sample_requested_ns;
  t.sample_requested_ns = 0;
  resume_one(tid, t, /*detach=*/false);
  out.held_ns = mono_ns() - t_stop;
  return out;
}

void TracedProcess::rebuild_after_exec() {
  // ptrace(2): after an exec every other thread is gone and the exec'ing thread has taken
  // the leader's tid.
  threads_.clear();
  threads_[pid_].stopped = true;  // held at its PTRACE_EVENT_EXEC
  maps_.clear();
}

void TracedProcess::resume(pid_t tid) {
  auto it = threads_.find(tid);
  if (it != threads_.end() && it->second.stopped) {
    resume_one(tid, it->second, /*detach=*/false);
  }
}

std::optional<TracedProcess::TraceEvent> TracedProcess::next_event(
    std::chrono::milliseconds timeout, size_t stack_bytes) {
  if (!events_.empty()) {
    TraceEvent e = std::move(events_.front());
    events_.pop_front();
    return e;
  }
  auto ev = waiter_.next(timeout);
  if (!ev) {
    return std::nullopt;
  }
  return handle_status(*ev, stack_bytes);
}

std::optional<TracedProcess::TraceEvent> TracedProcess::handle_status(const Waiter::Event& e,
                                                                      size_t stack_bytes) {
  using K = WaitStatus::Kind;
  using EK = TraceEvent::Kind;
  const Waiter::Event* ev = &e;
  const pid_t tid = ev->tid;
  auto it = threads_.find(tid);
  if (it == threads_.end()) {
    if (ev->status.kind() == K::kEventStop || ev->status.kind() == K::kSignalStop) {
      // First stop of a thread seized at birth, before its parent's clone event arrived.
      auto st = read_status(tid);
      if (st && st->tgid == pid_) {
        auto& t = threads_[tid];
        t.stopped = true;
        if (ev->status.kind() == K::kSignalStop) {
          t.pending_signal = ev->status.signal();
        }
        resume_one(tid, t, false);
      }
    }
    return std::nullopt;  // an exit of a thread already forgotten (after exec)
  }
  Thread& t = it->second;
  const K kind = ev->status.kind();
  if (t.sample_requested_ns != 0 && (kind == K::kEventStop || kind == K::kSignalStop ||
                                     kind == K::kGroupStop || kind == K::kSyscallStop)) {
    on_status(*ev);  // records a signal to re-deliver, a group-stop to keep
    if (kind == K::kSignalStop) {
      events_.emplace_back(EK::kSignal, tid, 0, ev->status.signal());
    }
    return take_sample(tid, t);
  }
  switch (kind) {
    case K::kExited:
    case K::kKilled:
      threads_.erase(it);
      if (tid == pid_) {
        attached_ = !threads_.empty();
        return TraceEvent{EK::kProcessExited, tid, 0, ev->status.raw()};
      }
      return TraceEvent{EK::kThreadExited, tid};
    case K::kGroupStop:
      // The target was stopped (SIGSTOP & co): keep it stopped without resuming it.
      t.stopped = true;
      t.group_stop = true;
      resume_one(tid, t, false);  // PTRACE_LISTEN
      return std::nullopt;
    case K::kSignalStop: {
      int sig = ev->status.signal();
      t.stopped = true;
      t.group_stop = false;
      t.pending_signal = sig;
      resume_one(tid, t, false);  // re-delivered at once, never held for a sample
      return TraceEvent{EK::kSignal, tid, 0, sig};
    }
    case K::kPtraceEvent: {
      t.stopped = true;
      int event = ev->status.ptrace_event();
      if (event == PTRACE_EVENT_EXEC) {
        rebuild_after_exec();
        return TraceEvent{EK::kExec, pid_};
      }
      if (event == PTRACE_EVENT_CLONE) {
        unsigned long child = 0;
        ptrace(PTRACE_GETEVENTMSG, tid, nullptr, &child);
        TraceEvent out{EK::kThreadCreated, tid, static_cast<pid_t>(child)};
        // The creator is stopped right at its clone: its stack is the creation stack.
        out.creator = snapshot_stopped(tid, stack_bytes);
        if (child > 0 && !threads_.count(static_cast<pid_t>(child))) {
          threads_.emplace(static_cast<pid_t>(child), Thread{});
        }
        auto again = threads_.find(tid);
        if (again != threads_.end()) {
          resume_one(tid, again->second, false);
        }
        return out;
      }
      resume_one(tid, t, false);
      return std::nullopt;
    }
    case K::kEventStop:
    case K::kSyscallStop:
    case K::kUnknown:
      // A new thread's first stop, or an interrupt that outlived its sample: resume.
      t.stopped = true;
      t.group_stop = false;
      resume_one(tid, t, false);
      return std::nullopt;
  }
  return std::nullopt;
}

}  // namespace profctl
