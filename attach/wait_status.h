// SPDX-License-Identifier: MIT
// WaitStatus: the bits of a waitpid status decoded once (STYLE 4).
#pragma once

#include <ostream>

namespace profctl {

class WaitStatus {
 public:
  enum class Kind {
    kExited,       // WIFEXITED: exit_code()
    kKilled,       // WIFSIGNALED: signal()
    kSignalStop,   // signal-delivery-stop: signal() must be re-delivered on resume
    kGroupStop,    // PTRACE_EVENT_STOP with a stopping signal (seized tracee, group-stop)
    kEventStop,    // PTRACE_EVENT_STOP with SIGTRAP: PTRACE_INTERRUPT or a new clone child
    kPtraceEvent,  // another PTRACE_EVENT_*: ptrace_event()
    kSyscallStop,  // SIGTRAP|0x80 with PTRACE_O_TRACESYSGOOD
    kUnknown,
  };

  explicit WaitStatus(int raw = 0) : raw_(raw) {}
  int raw() const { return raw_; }
  Kind kind() const;
  int exit_code() const;     // kExited
  int signal() const;        // kKilled, kSignalStop, kGroupStop: the signal
  int ptrace_event() const;  // kPtraceEvent: PTRACE_EVENT_CLONE, _EXEC, _FORK, ...
  bool stopped() const;      // any kind of ptrace-stop

 private:
  int raw_;
};

std::ostream& operator<<(std::ostream& os, const WaitStatus& s);

}  // namespace profctl
