// Waiter: the one choke point for waitpid (STYLE 5). Every ptrace stop and exit of every
// tracee goes through it; a status for a pid the caller did not ask about is kept, never
// dropped, so nothing is reaped or lost blindly.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <optional>
#include <utility>

#include "attach/wait_status.h"

namespace profctl {

class Waiter {
 public:
  struct Event {
    pid_t tid;
    WaitStatus status;
  };

  // The next status of any tracee or child (__WALL). Waits at most `timeout` (blocking in
  // waitpid, not polling); nullopt when it elapsed or there is nothing left to wait for.
  std::optional<Event> next(std::chrono::milliseconds timeout);
  // The next status of `tid` only; statuses of others seen meanwhile are kept for next().
  std::optional<Event> next_for(pid_t tid, std::chrono::milliseconds timeout);
  // Hands back a status to be returned again by next()/next_for().
  void push_back(Event e) { kept_.push_back(e); }

 private:
  std::optional<Event> wait_raw(pid_t which, std::chrono::milliseconds timeout);
  std::deque<Event> kept_;
};

}  // namespace profctl
