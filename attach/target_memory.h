// SPDX-License-Identifier: MIT
// TargetMemory: what the probe installer needs of a target process, and nothing more: its
// pid, its memory, and a syscall run by the target itself. StoppedWorld is the one profctl
// uses (/proc/PID/mem and remote syscalls, every thread stopped); tests/probe implements
// it over the test process's own memory, so the real installer runs there without ptrace.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>

#include "base/result.h"

namespace profctl {

class TargetMemory {
 public:
  virtual ~TargetMemory() = default;

  virtual pid_t pid() const = 0;
  // A short count when the range runs into an unmapped page.
  virtual Result<size_t> read(uint64_t addr, std::span<std::byte> out) = 0;
  // Writes read-only text too (as /proc/PID/mem does).
  virtual Result<void> write(uint64_t addr, std::span<const std::byte> data) = 0;
  // Runs syscall `nr` as the target and returns its raw result (-errno on failure); the
  // Result fails only when the call could not be made at all.
  virtual Result<long> syscall(long nr, std::array<uint64_t, 6> args) = 0;

 protected:
  TargetMemory() = default;
  TargetMemory(const TargetMemory&) = default;
  TargetMemory& operator=(const TargetMemory&) = default;
};

}  // namespace profctl
