#include "attach/waiter.h"

#include <sys/time.h>
#include <sys/wait.h>

#include <cerrno>
#include <csignal>

namespace profctl {
namespace {

extern "C" void on_wait_alarm(int) {}

// Arms a periodic SIGALRM for the duration of one blocking waitpid, so that the wait
// returns EINTR instead of hanging on a thread that never stops (uninterruptible sleep).
// Periodic, so an alarm that fires just before waitpid blocks is followed by another.
class WaitAlarm {
 public:
  explicit WaitAlarm(std::chrono::milliseconds period) {
    struct sigaction sa {};
    sa.sa_handler = on_wait_alarm;  // no SA_RESTART: waitpid must return EINTR
    sigemptyset(&sa.sa_mask);
    sigaction(SIGALRM, &sa, &old_sa_);
    long us = std::max<long>(1000, static_cast<long>(period.count()) * 1000);
    itimerval t{};
    t.it_value.tv_sec = us / 1000000;
    t.it_value.tv_usec = us % 1000000;
    t.it_interval = t.it_value;
    setitimer(ITIMER_REAL, &t, &old_timer_);
  }
  ~WaitAlarm() {
    setitimer(ITIMER_REAL, &old_timer_, nullptr);
    sigaction(SIGALRM, &old_sa_, nullptr);
  }
  WaitAlarm(const WaitAlarm&) = delete;
  WaitAlarm& operator=(const WaitAlarm&) = delete;

 private:
  struct sigaction old_sa_ {};
  itimerval old_timer_{};
};

}  // namespace

std::optional<Waiter::Event> Waiter::wait_raw(pid_t which, std::chrono::milliseconds timeout) {
  int status = 0;
  pid_t r = waitpid(which, &status, __WALL | WNOHANG);
  if (r > 0) {
    return Event{r, WaitStatus(status)};
  }
  if (r < 0 || timeout.count() <= 0) {
    return std::nullopt;  // ECHILD: nothing to wait for
  }
  auto deadline = std::chrono::steady_clock::now() + timeout;
  WaitAlarm alarm(timeout);
  for (;;) {
    r = waitpid(which, &status, __WALL);
    if (r > 0) {
      return Event{r, WaitStatus(status)};
    }
    if (r < 0 && errno != EINTR) {
      return std::nullopt;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return std::nullopt;
    }
  }
}

std::optional<Waiter::Event> Waiter::next(std::chrono::milliseconds timeout) {
  if (!kept_.empty()) {
    Event e = kept_.front();
    kept_.pop_front();
    return e;
  }
  return wait_raw(-1, timeout);
}

std::optional<Waiter::Event> Waiter::next_for(pid_t tid, std::chrono::milliseconds timeout) {
  for (auto it = kept_.begin(); it != kept_.end(); ++it) {
    if (it->tid == tid) {
      Event e = *it;
      kept_.erase(it);
      return e;
    }
  }
  return wait_raw(tid, timeout);
}

}  // namespace profctl
