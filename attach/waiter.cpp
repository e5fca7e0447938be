// SPDX-License-Identifier: MIT
#include "attach/waiter.h"

#include <sys/wait.h>

#include <cerrno>
#include <csignal>
#include <ctime>

namespace profctl {
namespace {

// waitid's si_status of a stop carries the whole stop word (signal | event << 8), as
// waitpid's status does shifted by 8; rebuild the waitpid encoding so there is one decoder.
WaitStatus status_from(const siginfo_t& si) {
  switch (si.si_code) {
    case CLD_EXITED:
      return WaitStatus((si.si_status & 0xff) << 8);
    case CLD_KILLED:
      return WaitStatus(si.si_status & 0x7f);
    case CLD_DUMPED:
      return WaitStatus((si.si_status & 0x7f) | 0x80);
    case CLD_TRAPPED:
    case CLD_STOPPED:
      return WaitStatus(((si.si_status & 0xffff) << 8) | 0x7f);
    default:
      return WaitStatus(0xffff);  // CLD_CONTINUED: not requested, decodes as unknown
  }
}

}  // namespace

void Waiter::block_sigchld() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

Waiter::Waiter() { block_sigchld(); }

std::optional<Waiter::Event> Waiter::peek(idtype_t which, pid_t id, bool* none_left) {
  siginfo_t si{};
  *none_left = false;
  if (waitid(which, static_cast<id_t>(id), &si, WEXITED | WSTOPPED | __WALL | WNOHANG | WNOWAIT) !=
      0) {
    *none_left = errno == ECHILD;
    return std::nullopt;
  }
  if (si.si_pid == 0) {
    return std::nullopt;  // children exist, none has a status
  }
  Event e{si.si_pid, status_from(si), false};
  if (e.status.kind() == WaitStatus::Kind::kSignalStop) {
    e.pending_in_kernel = true;  // the caller re-injects it (or consumes it)
  } else {
    consume(e);
  }
  return e;
}

void Waiter::consume(const Event& e) {
  int st = 0;
  while (waitpid(e.tid, &st, __WALL | WNOHANG) < 0 && errno == EINTR) {
  }
}

bool Waiter::nap(std::chrono::nanoseconds slice, bool wake) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(slice.count() / 1000000000);
  ts.tv_nsec = static_cast<long>(slice.count() % 1000000000);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  if (wake) {
    return sigtimedwait(&chld, nullptr, &ts) == SIGCHLD;
  }
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
  const timespec zero{};
  return sigtimedwait(&chld, nullptr, &zero) == SIGCHLD;
}

std::optional<Waiter::Event> Waiter::wait_one(idtype_t which, pid_t id,
                                              std::chrono::nanoseconds timeout) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    bool none_left = false;
    if (auto e = peek(which, id, &none_left)) {
      return e;
    }
    if (none_left) {
      return std::nullopt;
    }
    auto left = deadline - std::chrono::steady_clock::now();
    if (left <= std::chrono::nanoseconds(0)) {
      return std::nullopt;
    }
    // SIGCHLD is coalesced, but a status that arrives after the peek above leaves it
    // pending, so this never sleeps through one. Bounded at 50 ms in case another thread
    // of this process left SIGCHLD unblocked and took it.
    auto slice = std::min<std::chrono::nanoseconds>(left, std::chrono::milliseconds(50));
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(slice.count() / 1000000000);
    ts.tv_nsec = static_cast<long>(slice.count() % 1000000000);
    (void)sigtimedwait(&chld, nullptr, &ts);
  }
}

std::optional<Waiter::Event> Waiter::next(std::chrono::nanoseconds timeout) {
  return wait_one(P_ALL, 0, timeout);
}

std::optional<Waiter::Event> Waiter::next_for(pid_t tid, std::chrono::nanoseconds timeout) {
  return wait_one(P_PID, tid, timeout);
}

}  // namespace profctl
