// SPDX-License-Identifier: MIT
// What /proc says about a thread, read before it was stopped.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>

namespace profctl {

// /proc/PID/task/TID/syscall for a thread blocked in a syscall.
struct SyscallWait {
  long nr = -1;                    // syscall number (x86-64)
  std::array<uint64_t, 6> args{};  // arguments; args[0] is the futex address for futex
  uint64_t sp = 0;
  uint64_t pc = 0;
};

struct ThreadInfo {
  pid_t tid = 0;
  std::string name;                    // comm
  char state = '?';                    // R S D T t Z X I, from /proc/.../stat before the stop
  std::optional<SyscallWait> syscall;  // set when blocked in a syscall
  uint64_t cpu_ns = 0;                 // utime + stime
};

}  // namespace profctl
