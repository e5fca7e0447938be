// SPDX-License-Identifier: MIT
#include "cli/signals.h"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "base/fd.h"

namespace profctl::cli {
namespace {

std::atomic<bool> g_stop{false};
std::atomic<int> g_signal{0};
std::atomic<pid_t> g_forward{0};
std::atomic<int64_t> g_stop_ns{0};  // CLOCK_MONOTONIC (steady_clock's) of the first stop signal

constexpr int kStopSignals[] = {SIGINT, SIGTERM, SIGHUP};

extern "C" void on_capture_signal(int sig, siginfo_t* info, void*) {
  pid_t child = g_forward.load();
  // A signal from the terminal (SI_KERNEL) reached the child's process group already.
  if (child > 0 && (info == nullptr || info->si_code != SI_KERNEL)) {
    kill(child, sig);
  }
  if (!g_stop.load()) {
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);  // async-signal-safe
    int64_t expected = 0;
    g_stop_ns.compare_exchange_strong(expected,
                                      static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec);
  }
  g_signal.store(sig);
  g_stop.store(true);
}

}  // namespace

void install_capture_signals(pid_t forward_to) {
  g_forward.store(forward_to);
  struct sigaction sa {};
  sa.sa_sigaction = on_capture_signal;
  sa.sa_flags = SA_SIGINFO;  // no SA_RESTART
  sigemptyset(&sa.sa_mask);
  for (int s : kStopSignals) {
    sigaction(s, &sa, nullptr);
  }
  signal(SIGPIPE, SIG_IGN);  // a closed stdout is a write error, not a death mid-capture
}

void set_forward_pid(pid_t pid) {
  g_forward.store(pid);
  // A signal that came while the program was being set up did not reach it: it does now.
  if (int sig = g_signal.load(); pid > 0 && sig != 0) {
    kill(pid, sig);
  }
}

const std::atomic<bool>& stop_requested() { return g_stop; }
int last_stop_signal() { return g_signal.load(); }

std::string signal_name(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev != nullptr ? std::string("SIG") + abbrev : "signal " + std::to_string(sig);
}

std::optional<std::chrono::steady_clock::time_point> stop_requested_at() {
  const int64_t ns = g_stop_ns.load();
  if (ns == 0) {
    return std::nullopt;
  }
  return std::chrono::steady_clock::time_point(std::chrono::nanoseconds(ns));
}

std::optional<int> wait_program_exit(pid_t pid) {
  // The stop signals are blocked except inside ppoll, so one that arrives between the check
  // of the flag and the wait still ends the wait (EINTR) instead of being missed.
  sigset_t stops;
  sigset_t old;
  sigemptyset(&stops);
  for (int s : kStopSignals) {
    sigaddset(&stops, s);
  }
  pthread_sigmask(SIG_BLOCK, &stops, &old);
  struct Restore {
    sigset_t* old;
    ~Restore() { pthread_sigmask(SIG_SETMASK, old, nullptr); }
  } restore{&old};
  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  for (;;) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      return st;
    }
    if (r < 0 && errno != EINTR) {
      return std::nullopt;  // not our child any more: nothing to wait for
    }
    timespec ts{};
    timespec* timeout = nullptr;
    if (auto at = stop_requested_at()) {
      auto left = *at + kRunStopGrace - std::chrono::steady_clock::now();
      if (left <= std::chrono::nanoseconds(0)) {
        return std::nullopt;
      }
      auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(left).count();
      ts.tv_sec = static_cast<time_t>(ns / 1000000000);
      ts.tv_nsec = static_cast<long>(ns % 1000000000);
      timeout = &ts;
    }
    if (!pidfd.valid()) {
      // No pidfd (a kernel before 5.3): look again every 100 ms.
      timespec slice{0, 100000000};
      if (timeout == nullptr || ts.tv_sec > 0 || ts.tv_nsec > slice.tv_nsec) {
        timeout = &slice;
      }
    }
    pollfd p{pidfd.get(), POLLIN, 0};
    (void)ppoll(&p, 1, timeout, &old);  // EINTR: a signal; either way, look again
  }
}

}  // namespace profctl::cli
