// SPDX-License-Identifier: MIT
#include "tests/probe/in_process_memory.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

namespace profctl::probe::testing {

pid_t InProcessMemory::pid() const { return getpid(); }

Result<int> InProcessMemory::mem() {
  if (!mem_.valid()) {
    auto fd = Fd::open("/proc/self/mem", O_RDWR);
    if (!fd) {
      return fd.error();
    }
    mem_ = std::move(*fd);
  }
  return mem_.get();
}

Result<size_t> InProcessMemory::read(uint64_t addr, std::span<std::byte> out) {
  auto fd = mem();
  if (!fd) {
    return fd.error();
  }
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(*fd, out.data() + done, out.size() - done, static_cast<off_t>(addr + done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      if (done == 0 && n < 0) {
        return errno_error("reading own memory at " + std::to_string(addr));
      }
      break;
    }
    done += static_cast<size_t>(n);
  }
  return done;
}

Result<void> InProcessMemory::write(uint64_t addr, std::span<const std::byte> data) {
  auto fd = mem();
  if (!fd) {
    return fd.error();
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n =
        pwrite(*fd, data.data() + done, data.size() - done, static_cast<off_t>(addr + done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return errno_error("writing own memory at " + std::to_string(addr + done));
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

Result<long> InProcessMemory::syscall(long nr, std::array<uint64_t, 6> a) {
  const long r = ::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
  return r == -1 ? -static_cast<long>(errno) : r;
}

}  // namespace profctl::probe::testing
