// SPDX-License-Identifier: MIT
#include "cli/signals.h"

#include <signal.h>

namespace profctl::cli {
namespace {

std::atomic<bool> g_stop{false};
std::atomic<int> g_signal{0};
std::atomic<pid_t> g_forward{0};

extern "C" void on_capture_signal(int sig, siginfo_t* info, void*) {
  pid_t child = g_forward.load();
  if (child > 0) {
    // A signal from the terminal (SI_KERNEL) reached the child's process group already.
    if (info == nullptr || info->si_code != SI_KERNEL) {
      kill(child, sig);
    }
    return;
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
  for (int s : {SIGINT, SIGTERM, SIGHUP}) {
    sigaction(s, &sa, nullptr);
  }
  signal(SIGPIPE, SIG_IGN);  // a closed stdout is a write error, not a death mid-capture
}

void set_forward_pid(pid_t pid) { g_forward.store(pid); }

const std::atomic<bool>& stop_requested() { return g_stop; }
int last_stop_signal() { return g_signal.load(); }

}  // namespace profctl::cli
