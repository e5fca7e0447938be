// SPDX-License-Identifier: MIT
// InProcessMemory: TargetMemory over the test process itself, so tests run the real probe
// installer (probe/installer.h) on their own libc without ptrace. Memory goes through
// /proc/self/mem, as StoppedWorld's goes through /proc/PID/mem (so read-only text is
// written the same way, copy-on-write, and an unmapped page is a short read instead of a
// fault); a "remote" syscall is a local one, made by the calling thread.
#pragma once

#include "attach/target_memory.h"
#include "base/fd.h"

namespace profctl::probe::testing {

class InProcessMemory final : public TargetMemory {
 public:
  pid_t pid() const override;
  Result<size_t> read(uint64_t addr, std::span<std::byte> out) override;
  Result<void> write(uint64_t addr, std::span<const std::byte> data) override;
  Result<long> syscall(long nr, std::array<uint64_t, 6> args) override;

 private:
  Result<int> mem();
  Fd mem_;
};

}  // namespace profctl::probe::testing
