// SPDX-License-Identifier: MIT
// StackReader: copies the stacks of stopped threads out of the target, all of them in one
// batched process_vm_readv where it can, falling back per thread to /proc/PID/mem
// (STYLE 11) for ranges that the batch could not read.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "attach/proc.h"
#include "attach/snapshot.h"
#include "base/fd.h"

namespace profctl {

class StackReader {
 public:
  explicit StackReader(pid_t pid) : pid_(pid) {}

  // Fills stack_base/stack_size/stack_bytes/stack_end/stack_cut of every snapshot from its
  // regs.rsp: [rsp, min(end of the mapping holding rsp, rsp + max_bytes)). Returns the
  // bytes copied in all. `maps` is /proc/PID/maps parsed, sorted.
  uint64_t read_stacks(std::vector<Snapshot>& snaps, const std::vector<MapEntry>& maps,
                       size_t max_bytes);

 private:
  size_t read_fallback(uint64_t addr, std::byte* dst, size_t len);
  pid_t pid_;
  Fd mem_;  // /proc/PID/mem, opened on first fallback
};

}  // namespace profctl
