// SPDX-License-Identifier: MIT
// Snapshot: what attach/ hands to unwind/ — one thread's registers and a copy of the top of
// its stack, both taken while the thread was stopped. It owns its bytes (STYLE 13); the
// target has been resumed by the time anyone reads it.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace profctl {

// Frees a stack copy: its own allocation, or its share of a block that holds the copies of
// every thread of one world capture (StackReader::reserve: allocated before the stop, so
// that the stop holds no allocation and no page fault).
struct StackBytesFree {
  StackBytesFree() = default;
  // From std::make_unique<std::byte[]>: a copy of its own.
  // NOLINTNEXTLINE(google-explicit-constructor): implicit, so that such copies assign as before
  StackBytesFree(std::default_delete<std::byte[]> /*own*/) {}
  explicit StackBytesFree(std::shared_ptr<const void> in_block) : block(std::move(in_block)) {}
  void operator()(std::byte* p) const {
    if (!block) {
      delete[] p;
    }
  }
  std::shared_ptr<const void> block;  // set: the bytes live in this block
};
using StackBytes = std::unique_ptr<std::byte[], StackBytesFree>;

struct Snapshot {
  pid_t pid = 0;  // thread group (address space) the thread belongs to
  pid_t tid = 0;
  // The address space's id (TracedProcess::space_id): which modules unwind and symbolize it.
  // 0: the target's own (a snapshot not taken by a TracedProcess).
  uint32_t space = 0;
  user_regs_struct regs{};  // as PTRACE_GETREGS returned them; rip rewound past no breakpoint

  // Copy of target memory [stack_base, stack_base + stack_size). stack_base is the
  // thread's rsp at the stop (target address space).
  uint64_t stack_base = 0;
  size_t stack_size = 0;
  StackBytes stack_bytes;
  // The end of the mapping that holds rsp (target address). stack_base + stack_size <
  // stack_end means the copy was cut by --stack-bytes (or a short read): an unwind that
  // runs off the copy is truncated, not finished.
  uint64_t stack_end = 0;
  bool stack_cut = false;        // the copy stopped before stack_end
  std::string stack_cut_reason;  // why, for the report ("--stack-bytes 65536", "short read")

  // Set by the probe engine's snapshot filter when the thread is inside a timed wait: the
  // probed wait function and the TSC when the wait began.
  std::string wait_function;
  uint64_t wait_start_tsc = 0;

  std::span<const std::byte> stack() const { return {stack_bytes.get(), stack_size}; }
};

}  // namespace profctl
