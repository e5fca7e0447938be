// SPDX-License-Identifier: MIT
// StoppedWorld: a scope in which every thread of a traced process is held in a ptrace-stop
// (or, for a process just forked by the target, that one child at its first stop). Inside
// it, code can read and write registers and memory and run a syscall in the target; when
// it ends, every thread it stopped resumes as it was (signals re-delivered, group-stopped
// threads left stopped). capture_world and probe installation both run inside one.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/fd.h"
#include "base/result.h"

namespace profctl {

class TracedProcess;

class StoppedWorld {
 public:
  ~StoppedWorld();
  StoppedWorld(const StoppedWorld&) = delete;
  StoppedWorld& operator=(const StoppedWorld&) = delete;

  pid_t pid() const { return pid_; }
  // Threads held stopped, sorted; and those that did not reach their stop in time (in
  // uninterruptible sleep): they are not executing user code either.
  const std::vector<pid_t>& stopped() const { return stopped_; }
  const std::vector<pid_t>& not_stopped() const { return not_stopped_; }

  Result<user_regs_struct> regs(pid_t tid) const;
  Result<void> set_regs(pid_t tid, const user_regs_struct& r);
  // Reads target memory; a short count when the range runs into an unmapped page.
  Result<size_t> read(uint64_t addr, std::span<std::byte> out);
  // Writes target memory through /proc/PID/mem, which also writes read-only text.
  Result<void> write(uint64_t addr, std::span<const std::byte> data);
  // Runs syscall `nr` in one stopped thread of the target (registers saved, rip pointed at
  // an existing `syscall` instruction, one single-step, registers restored) and returns
  // its raw result (-errno on failure).
  Result<long> syscall(long nr, std::array<uint64_t, 6> args = {});

  // Keeps the threads stopped when the scope ends (the caller detaches them itself).
  void keep_stopped() { resume_at_end_ = false; }

 private:
  friend class TracedProcess;
  StoppedWorld(TracedProcess& tp, pid_t mem_pid, std::vector<pid_t> stopped,
               std::vector<pid_t> not_stopped, bool resume_at_end);
  Result<void> open_mem();
  Result<uint64_t> find_syscall_insn();
  pid_t pick_thread() const;

  TracedProcess& tp_;
  pid_t pid_;
  std::vector<pid_t> stopped_;
  std::vector<pid_t> not_stopped_;
  bool resume_at_end_;
  Fd mem_;
};

}  // namespace profctl
