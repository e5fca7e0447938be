// SPDX-License-Identifier: MIT
// StackReader: copies the stacks of stopped threads out of the target, all of them in one
// batched process_vm_readv where it can, falling back per thread to /proc/PID/mem
// (STYLE 11) for ranges that the batch could not read.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "attach/proc.h"
#include "attach/snapshot.h"
#include "base/fd.h"

namespace profctl {

class StackReader {
 public:
  explicit StackReader(pid_t pid) : pid_(pid) {}

  // Allocates (and faults in) one block of about `bytes` for the copies, before a stop:
  // read_stacks then puts each copy that fits in it and allocates only the others.
  void reserve(size_t bytes);

  // Fills stack_base/stack_size/stack_bytes/stack_end/stack_cut of every snapshot from its
  // regs.rsp: [rsp, min(end of the mapping holding rsp, rsp + max_bytes)). Returns the
  // bytes copied in all. `maps` is /proc/PID/maps parsed, sorted.
  uint64_t read_stacks(std::vector<Snapshot>& snaps, const std::vector<MapEntry>& maps,
                       size_t max_bytes);

 private:
  size_t read_fallback(uint64_t addr, std::byte* dst, size_t len);
  // A buffer for one copy: in the block when it fits, else its own.
  StackBytes buffer(size_t size);
  pid_t pid_;
  std::shared_ptr<std::byte> block_;  // reserve()'s block (munmapped with its last copy)
  size_t block_size_ = 0;
  size_t block_used_ = 0;
  Fd mem_;  // /proc/PID/mem, opened on first fallback
};

}  // namespace profctl
