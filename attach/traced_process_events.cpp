// SPDX-License-Identifier: MIT
// TracedProcess, the sampling side: per-thread snapshots and the event pump (clone, exit,
// exec, signals for the target). Stop-the-world lives in traced_process.cpp.
#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "attach/stack_reader.h"
#include "attach/traced_process.h"
#include "base/clock.h"
#include "base/fd.h"
#include "base/log.h"

namespace profctl {

namespace {

// The child side of launch(): waits, stopped, until the parent has seized it, then execs.
// Only async-signal-safe calls. profctl blocks SIGCHLD (and, mid-stop, termination
// signals); the command starts with none blocked.
[[noreturn]] void exec_when_seized(std::vector<char*>& cargv, int error_fd) {
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  raise(SIGSTOP);
  execvp(cargv[0], cargv.data());
  int err = errno;
  (void)!write(error_fd, &err, sizeof err);
  _exit(127);
}

}  // namespace

std::variant<std::unique_ptr<TracedProcess>, AttachError> TracedProcess::launch(
    const std::vector<std::string>& argv, bool trace_forks) {
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
    exec_when_seized(cargv, wr.get());
  }
  (void)wr.close();
  int st = 0;
  if (waitpid(pid, &st, WUNTRACED) != pid || !WIFSTOPPED(st)) {
    return AttachError{AttachFailure::kOther, "the command did not start", ""};
  }
  std::unique_ptr<TracedProcess> tp = make_root(pid);
  tp->trace_forks_ = trace_forks;
  // EXITKILL is right here and only here: the program exists because profctl ran it. The
  // breakpoint of run_to_hook is in ld.so's code only before any of the program's code runs,
  // so no process it creates can inherit it: without probes or children followed, forks
  // need not be traced.
  const long forks = trace_forks ? PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK : 0;
  if (ptrace(PTRACE_SEIZE, pid, nullptr,
             PTRACE_O_TRACECLONE | forks | PTRACE_O_TRACEEXEC | PTRACE_O_TRACESYSGOOD |
                 PTRACE_O_EXITKILL) != 0) {
    int err = errno;
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    return AttachError{AttachFailure::kPermission,
                       std::string("cannot trace the command: ") + std::strerror(err), ""};
  }
  tp->table_.add(pid, TState::kRunning);
  kill(pid, SIGCONT);
  if (auto failed = tp->walk_to_exec(rd, argv[0])) {
    return *failed;
  }
  return tp;  // stopped at its first instruction; the caller resumes it
}

std::optional<AttachError> TracedProcess::walk_to_exec(const Fd& exec_error,
                                                       const std::string& command) {
  // From the child's stop to its exec: group-stop trap, SIGCONT, then the exec.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    auto ev = queue_->next_status_of(pid_, std::chrono::milliseconds(500));
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
        table_.clear();
        attached_ = false;
        int err = 0;
        if (read(exec_error.get(), &err, sizeof err) == sizeof err) {
          return AttachError{AttachFailure::kOther,
                             "cannot run '" + command + "': " + std::strerror(err),
                             "check the command name and PATH"};
        }
        return AttachError{AttachFailure::kOther, "the command exited before it started", ""};
      }
      case K::kPtraceEvent:
        if (ev->status.ptrace_event() == PTRACE_EVENT_EXEC) {
          table_.apply(pid_, ev->status);
          return std::nullopt;
        }
        ptrace(PTRACE_CONT, pid_, nullptr, nullptr);
        break;
      case K::kSignalStop:
        ptrace(PTRACE_CONT, pid_, nullptr,
               ev->status.signal() == SIGSTOP ? 0 : ev->status.signal());
        break;
      default:
        ptrace(PTRACE_CONT, pid_, nullptr, nullptr);
        break;
    }
  }
}

std::optional<Snapshot> TracedProcess::snapshot_stopped(pid_t tid, size_t stack_bytes) {
  std::vector<Snapshot> one(1);
  one[0].pid = pid_;
  one[0].tid = tid;
  one[0].space = space_id_;
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &one[0].regs) != 0) {
    return std::nullopt;
  }
  if (maps_.empty() || find_mapping(maps_, one[0].regs.rsp) == nullptr) {
    if (auto text = read_maps_text(space_pid())) {
      maps_ = parse_maps(*text);
    }
  }
  StackReader reader(space_pid());
  reader.read_stacks(one, maps_, stack_bytes);
  for (const auto& o : observers_) {
    o->filter_snapshot(one[0]);
  }
  for (const auto& o : observers_) {
    o->on_sample(one[0]);
  }
  return std::move(one[0]);
}

bool TracedProcess::request_sample(pid_t tid) {
  const TracedThread* t = table_.find(tid);
  if (t == nullptr || t->state == TState::kExiting) {
    return false;
  }
  if (t->sample_requested_ns != 0) {
    return true;
  }
  table_.sample_requested(tid, monotonic_ns());
  if (t->state == TState::kStopped) {
    // Held at an event right now (rare): its stop is here already.
    queue_->push_back(take_sample(tid));
    return true;
  }
  if (t->state == TState::kRunning || t->state == TState::kListening) {
    interrupt_one(tid);
    if (table_.find(tid) == nullptr || table_.find(tid)->state == TState::kExiting) {
      return false;
    }
  }
  return true;  // kNew / kInterrupted: a stop is on its way
}

TracedProcess::TraceEvent TracedProcess::take_sample(pid_t tid, bool timer) {
  const uint64_t t_stop = monotonic_ns();
  TraceEvent out(TraceEvent::Kind::kSample, tid);
  out.timer = timer;
  out.sample = snapshot_stopped(tid, stack_bytes_);
  // A timer's stop is not the one a tick asked for: that request still stands.
  if (table_.find(tid) != nullptr && !timer) {
    out.stop_ns = t_stop - table_.sample_taken(tid);
  }
  resume_one(tid, /*detach=*/false);
  out.held_ns = monotonic_ns() - t_stop;
  return out;
}

void TracedProcess::rebuild_after_exec() {
  // ptrace(2): after an exec every other thread is gone and the exec'ing thread has taken
  // the leader's tid; it is held at its PTRACE_EVENT_EXEC.
  table_.clear();
  table_.add(pid_, TState::kStopped);
  leader_gone_ = false;
  maps_.clear();
  space_id_ = new_space_id();  // a new image: the old modules are gone
  chain_ = {};
}

void TracedProcess::resume(pid_t tid) { resume_one(tid, /*detach=*/false); }

Result<void> TracedProcess::run_to_entry() {
  auto auxv = read_auxv(pid_, {AT_ENTRY});
  if (!auxv) {
    return auxv.error();
  }
  const uint64_t entry = auxv->contains(AT_ENTRY) ? auxv->at(AT_ENTRY) : 0;
  if (entry == 0) {
    return Error{"no AT_ENTRY in the auxiliary vector of pid " + std::to_string(pid_)};
  }
  return run_to_breakpoint(
      entry, [] { return true; }, "its entry point");
}

Result<void> TracedProcess::run_to_hook(uint64_t hook, const std::function<bool()>& accept) {
  return run_to_breakpoint(hook, accept, "the dynamic linker's notification");
}

Result<void> TracedProcess::run_to_breakpoint(uint64_t at, const std::function<bool()>& accept,
                                              const std::string& what) {
  auto mem = Fd::open("/proc/" + std::to_string(pid_) + "/mem", O_RDWR);
  if (!mem) {
    return mem.error();
  }
  uint8_t original = 0;
  const uint8_t int3 = 0xcc;
  if (pread(mem->get(), &original, 1, static_cast<off_t>(at)) != 1 ||
      pwrite(mem->get(), &int3, 1, static_cast<off_t>(at)) != 1) {
    return errno_error("breakpoint at " + what);
  }
  // The program is ours from its exec (launch): it dies with profctl, so a byte left behind
  // by a killed profctl is never run by anything that outlives it.
  auto restore = [&] { (void)!pwrite(mem->get(), &original, 1, static_cast<off_t>(at)); };
  resume_one(pid_, false);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline) {
    auto ev = next_status(std::chrono::milliseconds(200));
    if (!ev) {
      continue;
    }
    user_regs_struct regs{};
    if (ev->tid == pid_ && ev->status.kind() == WaitStatus::Kind::kSignalStop &&
        ev->status.signal() == SIGTRAP && ptrace(PTRACE_GETREGS, pid_, nullptr, &regs) == 0 &&
        regs.rip == at + 1) {
      queue_->consume(*ev);
      table_.apply(pid_, ev->status);  // stopped; the trap is ours, not the program's
      table_.breakpoint_trap(pid_);
      if (accept()) {
        restore();
        regs.rip = at;
        ptrace(PTRACE_SETREGS, pid_, nullptr, &regs);
        return {};
      }
      // Declined: do the function's `ret` here, the breakpoint stays for the next call.
      uint64_t ret = 0;
      if (pread(mem->get(), &ret, sizeof ret, static_cast<off_t>(regs.rsp)) != sizeof ret) {
        restore();
        return errno_error("reading the return address at " + what);
      }
      regs.rip = ret;
      regs.rsp += sizeof ret;
      ptrace(PTRACE_SETREGS, pid_, nullptr, &regs);
      resume_one(pid_, false);
      continue;
    }
    auto tr = on_status(*ev);
    if (tr.what == Transition::What::kExited && ev->tid == pid_) {
      early_exit_ = ev->status;
      return Error{"the program exited before " + what};
    }
    if (table_.find(ev->tid) != nullptr && table_.find(ev->tid)->state == TState::kStopped) {
      resume_one(ev->tid, false);
    }
  }
  restore();
  return Error{"the program did not reach " + what};
}

std::optional<TracedProcess::TraceEvent> TracedProcess::handle_status(const Waiter::Event& ev,
                                                                      size_t stack_bytes) {
  using W = Transition::What;
  using EK = TraceEvent::Kind;
  const pid_t tid = ev.tid;
  const Transition tr = on_status(ev);
  if (tr.what == W::kNotOurs) {
    return std::nullopt;  // a child process: settled (or waiting for its creator's event)
  }
  if (tr.what == W::kExited) {
    return on_exit_status(tid, ev);
  }
  const TracedThread* t = table_.find(tid);
  if (t == nullptr) {
    return std::nullopt;
  }
  if (tr.what == W::kPtraceEvent && tr.event == PTRACE_EVENT_EXEC) {
    return TraceEvent{EK::kExec, pid_};  // held; the caller ends the capture
  }
  if (table_.take_timer_stop(tid)) {
    // Stopped by the CPU timer: where the CPU was. A tick's request, if one is pending,
    // still stops the thread again later.
    return take_sample(tid, /*timer=*/true);
  }
  if (t->sample_requested_ns != 0 && tr.what != W::kPtraceEvent) {
    // The stop we asked for (or a signal / group-stop that came first: same place).
    if (tr.what == W::kSignal) {
      queue_->push_back(TraceEvent(EK::kSignal, tid, 0, tr.signal));
    }
    return take_sample(tid);
  }
  switch (tr.what) {
    case W::kSignal:
      resume_one(tid, false);  // re-delivered at once, never held for a sample
      return TraceEvent{EK::kSignal, tid, 0, tr.signal};
    case W::kPtraceEvent:
      return on_event_stop(tid, tr, stack_bytes);
    case W::kGroupStop:
    case W::kStopped:
    default:
      // A new thread's first stop, the end of a listening group-stop, a job-control stop
      // (PTRACE_LISTEN keeps it stopped), or an interrupt that outlived its sample.
      resume_one(tid, false);
      return std::nullopt;
  }
}

std::optional<TracedProcess::TraceEvent> TracedProcess::on_exit_status(pid_t tid,
                                                                       const Waiter::Event& ev) {
  using EK = TraceEvent::Kind;
  // A traced leader's exit is reported once the whole group is gone; without the leader
  // (it exited early by pthread_exit) the last traced thread's exit ends the process.
  if (tid == pid_ || (leader_gone_ && table_.empty())) {
    table_.clear();
    attached_ = false;
    return TraceEvent{EK::kProcessExited, tid, 0, ev.status.raw()};
  }
  return TraceEvent{EK::kThreadExited, tid};
}

std::optional<TracedProcess::TraceEvent> TracedProcess::on_event_stop(pid_t tid,
                                                                      const Transition& tr,
                                                                      size_t stack_bytes) {
  using EK = TraceEvent::Kind;
  auto sample_pending = [&] {
    const TracedThread* t = table_.find(tid);
    return t != nullptr && t->sample_requested_ns != 0;
  };
  if (tr.event == PTRACE_EVENT_CLONE && table_.find(tid) != nullptr) {
    unsigned long msg = 0;
    ptrace(PTRACE_GETEVENTMSG, tid, nullptr, &msg);
    const auto child = static_cast<pid_t>(msg);
    if (table_.find(child) != nullptr || table_.gone(child)) {
      TraceEvent out{EK::kThreadCreated, tid, child};
      // The creator is stopped right at its clone: its stack is the creation stack.
      out.creator = snapshot_stopped(tid, stack_bytes);
      if (sample_pending()) {
        queue_->push_back(take_sample(tid));
      } else {
        resume_one(tid, false);
      }
      return out;
    }
  }
  if (sample_pending()) {
    return take_sample(tid);
  }
  resume_one(tid, false);
  return std::nullopt;
}

}  // namespace profctl
