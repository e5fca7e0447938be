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

#include "attach/target_memory.h"
#include "base/fd.h"
#include "base/result.h"

namespace profctl {

class TracedProcess;

class StoppedWorld : public TargetMemory {
 public:
  ~StoppedWorld() override;
  StoppedWorld(const StoppedWorld&) = delete;
  StoppedWorld& operator=(const StoppedWorld&) = delete;

  pid_t pid() const override { return pid_; }
  // Threads held stopped, sorted; and those that did not reach their stop in time (in
  // uninterruptible sleep): they are not executing user code either.
  const std::vector<pid_t>& stopped() const { return stopped_; }
  const std::vector<pid_t>& not_stopped() const { return not_stopped_; }

  Result<user_regs_struct> regs(pid_t tid) const;
  Result<void> set_regs(pid_t tid, const user_regs_struct& r);
  // Reads target memory; a short count when the range runs into an unmapped page.
  Result<size_t> read(uint64_t addr, std::span<std::byte> out) override;
  // Writes target memory through /proc/PID/mem, which also writes read-only text.
  Result<void> write(uint64_t addr, std::span<const std::byte> data) override;
  // Runs syscall `nr` in one stopped thread of the target and returns its raw result
  // (-errno on failure). The thread runs the target's own `syscall; ret` with its signals
  // blocked (they wait in the kernel, none is taken), stopping at the syscall's entry and
  // exit (PTRACE_SYSCALL, never a single-step); a sigreturn frame below its stack pointer
  // (attach/sigreturn_frame.h) makes it restore itself if profctl dies meanwhile. It ends
  // in an interrupt stop with its own registers and mask back, so its resume applies the
  // kernel's syscall-restart logic as if nothing had happened.
  Result<long> syscall(long nr, std::array<uint64_t, 6> args = {}) override;

  // Keeps the threads stopped when the scope ends (the caller detaches them itself).
  void keep_stopped() { resume_at_end_ = false; }

 private:
  friend class TracedProcess;
  StoppedWorld(TracedProcess& tp, pid_t mem_pid, std::vector<pid_t> stopped,
               std::vector<pid_t> not_stopped, bool resume_at_end);
  Result<void> open_mem();
  // The two pieces of target code a remote syscall runs through (TracedProcess::chain_).
  Result<void> find_chain();
  // A thread in an interrupt stop (not a group-stop, signal-delivery or event stop), moved
  // into one when none is.
  pid_t pick_thread();
  // Moves a thread stopped elsewhere (a consumed signal stop, an event stop) into an
  // interrupt stop: PTRACE_INTERRUPT, then resumed; it stops before it reaches user code.
  bool settle(pid_t tid);
  // Waits for `tid`'s next stop during a remote syscall (false: it is gone). SIGSTOP is
  // noted in `restop` and the thread resumed; so is an interrupt stop, unless wanted.
  Result<bool> await_chain_stop(pid_t tid, bool& restop, bool want_interrupt);
  // syscall()'s phases (stopped_world.cpp).
  struct SavedThread;
  struct ChainRun;
  Result<pid_t> syscall_thread(long nr, const std::array<uint64_t, 6>& args);
  Result<SavedThread> save_thread(pid_t tid);
  Result<void> chain_step(ChainRun& run);
  Result<long> run_chain(ChainRun& run, long nr);
  Result<void> restore_thread(ChainRun& run, const SavedThread& saved);

  TracedProcess& tp_;
  pid_t pid_;
  std::vector<pid_t> stopped_;
  std::vector<pid_t> not_stopped_;
  bool resume_at_end_;
  Fd mem_;
};

}  // namespace profctl
