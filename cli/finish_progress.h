// SPDX-License-Identifier: MIT
// FinishProgress: after the capture window ends, the work still to do (detaching, unwinding
// what was queued, symbolizing, writing) can take seconds on a big target. When it takes
// longer than a second, stderr says what profctl is doing: redrawn on a terminal, one line
// per phase otherwise.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

namespace profctl::cli {

class FinishProgress {
 public:
  explicit FinishProgress(bool tty);
  ~FinishProgress();  // clears the line
  FinishProgress(const FinishProgress&) = delete;
  FinishProgress& operator=(const FinishProgress&) = delete;

  // Starts the clock at the first phase.
  void phase(const std::string& what);

 private:
  void run();

  const bool tty_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::string phase_;
  bool printed_phase_ = false;
  bool printed_ = false;
  bool done_ = false;
  std::chrono::steady_clock::time_point start_{};
  std::thread thread_;
};

}  // namespace profctl::cli
