// SPDX-License-Identifier: MIT
#include "attach/wait_status.h"

#include <sys/ptrace.h>
#include <sys/wait.h>

#include <csignal>

namespace profctl {

WaitStatus::Kind WaitStatus::kind() const {
  if (WIFEXITED(raw_)) {
    return Kind::kExited;
  }
  if (WIFSIGNALED(raw_)) {
    return Kind::kKilled;
  }
  if (!WIFSTOPPED(raw_)) {
    return Kind::kUnknown;
  }
  int event = (raw_ >> 16) & 0xff;
  int sig = WSTOPSIG(raw_);
  if (event == PTRACE_EVENT_STOP) {
    // ptrace(2): for a seized tracee, group-stop reports as PTRACE_EVENT_STOP with the
    // stopping signal; PTRACE_INTERRUPT and the first stop of an auto-attached child report
    // SIGTRAP.
    if (sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU) {
      return Kind::kGroupStop;
    }
    return Kind::kEventStop;
  }
  if (event != 0) {
    return Kind::kPtraceEvent;
  }
  if (sig == (SIGTRAP | 0x80)) {
    return Kind::kSyscallStop;
  }
  return Kind::kSignalStop;
}

int WaitStatus::exit_code() const { return WIFEXITED(raw_) ? WEXITSTATUS(raw_) : -1; }

int WaitStatus::signal() const {
  if (WIFSIGNALED(raw_)) {
    return WTERMSIG(raw_);
  }
  if (WIFSTOPPED(raw_)) {
    return WSTOPSIG(raw_);
  }
  return 0;
}

int WaitStatus::ptrace_event() const { return (raw_ >> 16) & 0xff; }

bool WaitStatus::stopped() const { return WIFSTOPPED(raw_); }

std::ostream& operator<<(std::ostream& os, const WaitStatus& s) {
  switch (s.kind()) {
    case WaitStatus::Kind::kExited:
      return os << "exited(" << s.exit_code() << ")";
    case WaitStatus::Kind::kKilled:
      return os << "killed(sig " << s.signal() << ")";
    case WaitStatus::Kind::kSignalStop:
      return os << "signal-stop(sig " << s.signal() << ")";
    case WaitStatus::Kind::kGroupStop:
      return os << "group-stop(sig " << s.signal() << ")";
    case WaitStatus::Kind::kEventStop:
      return os << "event-stop";
    case WaitStatus::Kind::kPtraceEvent:
      return os << "ptrace-event(" << s.ptrace_event() << ")";
    case WaitStatus::Kind::kSyscallStop:
      return os << "syscall-stop";
    case WaitStatus::Kind::kUnknown:
      break;
  }
  return os << "status(0x" << std::hex << s.raw() << std::dec << ")";
}

}  // namespace profctl
