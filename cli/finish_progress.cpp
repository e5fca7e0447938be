// SPDX-License-Identifier: MIT
#include "cli/finish_progress.h"

#include <cstdio>

namespace profctl::cli {

FinishProgress::FinishProgress(bool tty) : tty_(tty), thread_([this] { run(); }) {}

FinishProgress::~FinishProgress() {
  {
    std::lock_guard lock(mu_);
    done_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (tty_ && printed_) {
    std::fputs("\r\033[K", stderr);
  }
}

void FinishProgress::phase(const std::string& what) {
  std::lock_guard lock(mu_);
  if (phase_.empty()) {
    start_ = std::chrono::steady_clock::now();
  }
  phase_ = what;
  printed_phase_ = false;
}

void FinishProgress::run() {
  std::unique_lock lock(mu_);
  while (!done_) {
    cv_.wait_for(lock, std::chrono::milliseconds(250));
    if (done_ || phase_.empty()) {
      continue;
    }
    const double s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (s < 1.0) {
      continue;
    }
    if (tty_) {
      std::fprintf(stderr, "\r\033[Kprofctl: finishing (%.0fs): %s...", s, phase_.c_str());
    } else if (!printed_phase_) {
      std::fprintf(stderr, "profctl: finishing (%.0fs): %s...\n", s, phase_.c_str());
    }
    printed_phase_ = true;
    printed_ = true;
  }
}

}  // namespace profctl::cli
