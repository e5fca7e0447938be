// SPDX-License-Identifier: MIT
#include "base/fd.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace profctl {

Fd& Fd::operator=(Fd&& other) noexcept {
  if (this != &other) {
    (void)close();
    fd_ = other.release();
  }
  return *this;
}

Fd::~Fd() { (void)close(); }

Result<Fd> Fd::open(const std::string& path, int flags) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) {
    return errno_error("open " + path);
  }
  return Fd(fd);
}

int Fd::release() {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

Result<void> Fd::close() {
  if (fd_ < 0) {
    return {};
  }
  int fd = release();
  if (::close(fd) != 0 && errno != EINTR) {
    return errno_error("close");
  }
  return {};
}

Result<std::string> read_file(const std::string& path) {
  auto fd = Fd::open(path, O_RDONLY);
  if (!fd) {
    return fd.error();
  }
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd->get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      return errno_error("read " + path);
    }
    if (n == 0) {
      break;
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

}  // namespace profctl
