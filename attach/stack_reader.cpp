// SPDX-License-Identifier: MIT
#include "attach/stack_reader.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <climits>
#include <string>

#include "base/fd.h"

namespace profctl {

namespace {

// What of a stack is copied: from rsp to the end of its mapping (or the thread pointer),
// at most `max_bytes`.
void bound_stack(Snapshot& s, const std::vector<MapEntry>& maps, size_t max_bytes) {
  const uint64_t sp = s.regs.rsp;
  s.stack_base = sp;
  const MapEntry* m = find_mapping(maps, sp);
  if (m == nullptr || !m->readable) {
    // The mapping is new (created during the stop) or rsp is garbage. Copy what
    // max_bytes allows; a short read below says how much was really there.
    s.stack_end = sp + std::min<uint64_t>(max_bytes, 64 * 1024);
    if (s.stack_end < sp) {
      s.stack_end = UINT64_MAX;
    }
  } else {
    s.stack_end = m->end;
    // A pthread's stack mapping holds its struct pthread (the TCB, ~2.3 KB) at the top,
    // where fs_base (the thread pointer) points, with static TLS just below it: no
    // frame lives at or above fs_base, so the copy stops there.
    if (s.regs.fs_base > sp && s.regs.fs_base < m->end) {
      s.stack_end = s.regs.fs_base;
    }
  }
  uint64_t want = s.stack_end - sp;
  if (want > max_bytes) {
    want = max_bytes;
    s.stack_cut = true;
    s.stack_cut_reason = "stack copy limited to --stack-bytes " + std::to_string(max_bytes);
  }
  s.stack_size = static_cast<size_t>(want);
}

}  // namespace

void StackReader::reserve(size_t bytes) {
  const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  bytes = (bytes + page - 1) / page * page;
  if (bytes == 0) {
    return;
  }
  // MAP_POPULATE: the kernel fills every page in one go, far cheaper than a fault each
  // during the copy, inside the stop (bench/RESULTS.md, issue 20).
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE,
                 -1, 0);
  if (p == MAP_FAILED) {
    return;  // each copy gets its own buffer, as without a block
  }
  block_ = std::shared_ptr<std::byte>(static_cast<std::byte*>(p),
                                      [bytes](std::byte* b) { munmap(b, bytes); });
  block_size_ = bytes;
  block_used_ = 0;
}

StackBytes StackReader::buffer(size_t size) {
  constexpr size_t kAlign = 16;
  if (block_ != nullptr && size <= block_size_ - block_used_) {
    std::byte* at = block_.get() + block_used_;
    block_used_ += std::min(block_size_ - block_used_, (size + kAlign - 1) / kAlign * kAlign);
    return StackBytes(at, StackBytesFree(block_));
  }
  // Uninitialised on purpose: zero-filling megabytes would cost more than the copy.
  return std::make_unique_for_overwrite<std::byte[]>(size);
}

uint64_t StackReader::read_stacks(std::vector<Snapshot>& snaps, const std::vector<MapEntry>& maps,
                                  size_t max_bytes) {
  std::vector<iovec> local;
  std::vector<iovec> remote;
  std::vector<size_t> owner;  // snapshot index of each iovec
  local.reserve(snaps.size());
  remote.reserve(snaps.size());
  for (size_t i = 0; i < snaps.size(); ++i) {
    Snapshot& s = snaps[i];
    bound_stack(s, maps, max_bytes);
    s.stack_bytes = buffer(s.stack_size);
    if (s.stack_size > 0) {
      local.push_back({s.stack_bytes.get(), s.stack_size});
      remote.push_back({reinterpret_cast<void*>(s.stack_base), s.stack_size});
      owner.push_back(i);
    }
  }

  // process_vm_readv stops at the first remote range it cannot read: walk the result to
  // see which ranges completed, and fall back for the rest one by one.
  uint64_t total = 0;
  size_t next = 0;
  while (next < local.size()) {
    size_t n = std::min<size_t>(local.size() - next, IOV_MAX);
    ssize_t got = process_vm_readv(pid_, &local[next], n, &remote[next], n, 0);
    size_t done_bytes = got > 0 ? static_cast<size_t>(got) : 0;
    size_t k = next;
    while (k < next + n && done_bytes >= local[k].iov_len) {
      done_bytes -= local[k].iov_len;
      total += local[k].iov_len;
      ++k;
    }
    if (k == next + n) {
      next = k;
      continue;
    }
    // iovec k is partial (done_bytes of it) or failed: finish it through /proc/PID/mem.
    Snapshot& s = snaps[owner[k]];
    size_t have = done_bytes;
    if (have < local[k].iov_len) {
      have +=
          read_fallback(s.stack_base + have, s.stack_bytes.get() + have, local[k].iov_len - have);
    }
    if (have < s.stack_size) {
      s.stack_size = have;
      s.stack_cut = true;
      char buf[32];
      snprintf(buf, sizeof buf, "%" PRIx64, s.stack_base + static_cast<uint64_t>(have));
      s.stack_cut_reason = std::string("short read of the stack at 0x") + buf;
    }
    total += have;
    next = k + 1;
  }
  return total;
}

size_t StackReader::read_fallback(uint64_t addr, std::byte* dst, size_t len) {
  if (!mem_.valid()) {
    auto fd = Fd::open("/proc/" + std::to_string(pid_) + "/mem", O_RDONLY);
    if (!fd) {
      return 0;
    }
    mem_ = std::move(*fd);
  }
  size_t have = 0;
  while (have < len) {
    ssize_t r = pread(mem_.get(), dst + have, len - have, static_cast<off_t>(addr + have));
    if (r <= 0) {
      if (r < 0 && errno == EINTR) {
        continue;
      }
      break;
    }
    have += static_cast<size_t>(r);
  }
  return have;
}

}  // namespace profctl
