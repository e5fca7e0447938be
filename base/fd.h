// SPDX-License-Identifier: MIT
// Fd: an owned file descriptor. Move-only, no implicit int (STYLE 4, 8): the raw fd is
// reached only through get(), so an owned fd never slips into a raw API unseen.
#pragma once

#include <string>

#include "base/result.h"

namespace profctl {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept;
  ~Fd();

  // open(2) with O_CLOEXEC added.
  static Result<Fd> open(const std::string& path, int flags);

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int release();
  // Closes now and reports the error. On Linux the descriptor is released even when
  // close(2) fails (EINTR included), so the Fd is empty afterwards either way.
  Result<void> close();

 private:
  int fd_ = -1;
};

// Reads a whole (small, /proc-style) file. Returns an error rather than throwing.
Result<std::string> read_file(const std::string& path);

}  // namespace profctl
