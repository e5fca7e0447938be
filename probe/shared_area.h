// SPDX-License-Identifier: MIT
// SharedArea: profctl's side of the memfd shared with the target (probe/abi/probe_abi.h):
// the control block, the thread slot table, the sampled-pointer table and its filter, the
// lock filter and the ring.
// The target creates the memfd; profctl takes it without a path (probe/target_memfd.h),
// proves it is that memfd, sizes, seals and maps it here; the target maps the same memfd
// (MAP_SHARED, PROT_READ|PROT_WRITE).
//
// The target can write every byte of the area at any time, so nothing profctl reads back
// from it is trusted: the layout (offsets, capacities, ring size, probing bound, stack
// budget, owner pid) is decided here at create() and kept in this object, and every use
// of the area goes through those copies. Values read from the area (slot keys, a wait's
// addresses, counters, ring contents) are data, never offsets, sizes or pointers into
// profctl's memory. All fields the target also touches are accessed with atomics
// (std::atomic_ref): the other side is another process running concurrently.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "probe/abi/probe_abi.h"
#include "probe/target_memfd.h"

namespace profctl::probe {

// The ring's default size. Small enough to stay in the CPUs' caches while the target writes
// and profctl reads it (a writer that finds it full waits for room): at --mem-rate 1 a
// 64 MiB ring made every record a trip to memory on both sides, and cost the target ~25%
// more than 8 MiB (bench/HEAP.md).
inline constexpr uint64_t kDefaultRingBytes = 8ULL << 20;

struct SharedAreaOptions {
  int64_t mem_rate = 512 * 1024;            // Go's MemProfileRate; 1 = every allocation; 0 = none
  uint32_t stack_bytes = 16 * 1024;         // stack copy budget per record (rounded down to 8)
  uint64_t ring_bytes = kDefaultRingBytes;  // rounded up to a power of two
  uint64_t pointer_capacity = 1ULL << 22;   // sampled pointers; rounded up to a power of two
  uint64_t thread_capacity = 4096;          // thread slots; rounded up to a power of two
  uint32_t max_probe = 16;                  // linear-probing bound in both tables
  pid_t owner_pid = 0;                      // the target's pid (records of other pids are foreign)
  uint64_t block_rate_ticks = 0;            // Go's block profile rate in TSC ticks; 0 = off
  uint64_t mutex_fraction = 0;              // Go's mutex profile fraction; 0 = off
  // Allocate every page of the area up front (fallocate on the memfd) and map it populated
  // in profctl: the target's first touch of a ring or table page is then a minor fault
  // that maps an existing page, never an allocation and zeroing on its probe path (on the
  // test VMs a first touch costs tens of microseconds). Map it with MAP_POPULATE in the
  // target too and it takes no fault at all. Costs the whole area's memory from the start
  // (~100 MiB with the defaults).
  bool prefault = true;
  // ABI v7, the walk in the target: bytes for the compiled unwind tables of the target's
  // modules (0: no walk, every record copies its stack); stack ids remembered (entries).
  uint64_t unwind_bytes = 16ULL << 20;
  uint64_t stack_id_capacity = 1ULL << 16;
  // A full ring makes a writer wait for room (false: it drops the record, counted) as long
  // as profctl refreshed the heartbeat within liveness_ticks (TSC ticks; 0 = never waits).
  bool ring_wait = true;
  uint64_t liveness_ticks = 0;
};

// A snapshot of probe_ctl.counters.
struct ProbeCounters {
  uint64_t records_written = 0;
  uint64_t dropped_ring_full = 0;
  uint64_t dropped_ptr_table_full = 0;
  uint64_t dropped_thread_table_full = 0;
  uint64_t foreign_pid_events = 0;
  uint64_t stack_copy_failed = 0;
  uint64_t inflight = 0;  // threads inside a call-through now: do not unmap while > 0
  uint64_t waits_seen = 0;
  uint64_t waits_recorded = 0;
  // Of dropped_ring_full, by the profile that lost them (probe_counters).
  uint64_t dropped_ring_alloc = 0;
  uint64_t dropped_ring_free = 0;
  uint64_t dropped_ring_mutex = 0;
  uint64_t dropped_ring_block = 0;
  uint64_t walk_fallbacks = 0;   // stacks it copied instead (profctl unwinds them)
  uint64_t ring_waits = 0;       // records that waited for room
  uint64_t dropped_stalled = 0;  // records dropped because profctl did not drain in time
};

// One module's compiled table for the walk in the target: rows as unwind/cfi_table.h's
// CfiRow (the same 16 bytes as probe_unwind_row) and its block index.
struct UnwindModule {
  uint64_t start = 0;  // target addresses [start, end) of the module's code
  uint64_t end = 0;
  uint64_t base = 0;                 // target address of row pc 0
  std::span<const std::byte> rows;   // nrows * 16 bytes, the last row "none"
  std::span<const uint32_t> blocks;  // nblocks + 1 entries
  uint32_t block_shift = 0;
};

// A timed wait in progress on one thread (probe_thread_slot's wait fields, each read once).
// Every value is the target's: use ret and slot only as target addresses, site only as a
// key.
struct ActiveWait {
  uint64_t key = 0;  // the thread pointer
  int32_t tid = 0;   // 0 when profctl has not registered the thread
  uint32_t site = 0;
  uint64_t ret = 0;   // the real return address
  uint64_t slot = 0;  // the hijacked stack word
  uint64_t tsc0 = 0;
  uint64_t lock = 0;
};

class SharedArea {
 public:
  // memfd_create + ftruncate + fallocate + seals + mmap, then the control block for
  // `options`. The area is created disabled. The seals (F_SEAL_SHRINK | F_SEAL_GROW |
  // F_SEAL_SEAL, checked back with the size before the mmap) keep the file exactly as large
  // as profctl's mapping whoever else holds it.
  static Result<SharedArea> create(const SharedAreaOptions& options);
  // The same on a memfd the target created (so that it needs no access to profctl's fds),
  // proven fresh by prove_fresh_memfd: see open_target_shared_area.
  static Result<SharedArea> create(const SharedAreaOptions& options, ProvenMemfd memfd);

  SharedArea() = default;  // empty: nothing mapped
  SharedArea(SharedArea&& other) noexcept;
  SharedArea& operator=(SharedArea&& other) noexcept;
  SharedArea(const SharedArea&) = delete;
  SharedArea& operator=(const SharedArea&) = delete;
  ~SharedArea();

  int fd() const { return fd_.get(); }  // the memfd, to be mapped into the target
  size_t size() const { return size_; }
  std::byte* data() const { return static_cast<std::byte*>(base_); }  // profctl's mapping
  // The control block in the mapping: the target may have rewritten any of it. Read only
  // fields meant to change (ring_head, counters) and never as a layout: use the accessors
  // below, which are profctl's own copies.
  probe_ctl* ctl() const { return static_cast<probe_ctl*>(base_); }

  // The layout as profctl made it (not as the control block now says).
  std::byte* ring() const { return data() + layout_.ring_offset; }
  uint64_t ring_size() const { return layout_.ring_size; }  // a power of two
  uint64_t thread_capacity() const { return layout_.threads_capacity; }
  uint64_t pointer_capacity() const { return layout_.ptrs_capacity; }
  uint32_t max_probe() const { return layout_.max_probe; }
  uint32_t stack_bytes() const { return layout_.stack_bytes; }  // per record, a multiple of 8
  pid_t owner_pid() const { return owner_pid_; }

  // enabled == 0 makes every trampoline take the original path at once. Clear it before
  // unpatching.
  void set_enabled(bool on);
  bool enabled() const;
  void set_mem_rate(int64_t rate);
  void set_owner_pid(pid_t pid);

  // Records a thread's stack bounds [stack_lo, stack_hi) (target addresses) and its tid
  // under its thread pointer (fs_base), claiming its slot if the thread has not run a probe
  // yet. With them the record path copies the stack with memcpy and takes the tid from the
  // slot, instead of two syscalls. tid 0 = let the blob ask gettid().
  Result<void> register_thread(uint64_t thread_pointer, uint64_t stack_lo, uint64_t stack_hi,
                               pid_t tid = 0);
  // Forgets a thread's bounds and tid. Call it on thread exit, before a new thread can
  // reuse the TCB (glibc caches thread stacks, so a new thread often gets the same fs_base).
  // Only when the slot is still `tid`'s: a new thread on the same TCB keeps its own.
  void forget_thread(uint64_t thread_pointer, pid_t tid);

  ProbeCounters counters() const;

  // Writes the tables of `modules` into the unwind region and makes them the ones the blob
  // walks with (a new directory, published with a release store after the rows it names).
  // Tables already written (same base and row count) are kept where they are; the region
  // only grows, so a walk in progress never reads rewritten rows. Modules that overlap an
  // earlier one or do not fit are left out (their stacks are copied). Returns how many
  // modules the directory names.
  size_t publish_unwind_tables(std::vector<UnwindModule> modules);
  size_t unwind_tables() const { return unwind_.published; }

  // The liveness word: call every few milliseconds while records are being drained. A
  // writer waits for room only while it is fresh.
  void heartbeat();
  // True when the writers found profctl gone (heartbeat stale) and silenced the probes;
  // resume() clears it and enables them again.
  bool stalled() const;
  void resume_after_stall();

  // Waits in progress (read while the target runs: a consistent view needs the thread
  // stopped). wait_of: the one of a thread pointer.
  std::vector<ActiveWait> active_waits() const;
  std::optional<ActiveWait> wait_of(uint64_t thread_pointer) const;
  // Marks a thread's wait over (after profctl put its return address back).
  void clear_wait(uint64_t thread_pointer);

 private:
  struct Layout {
    uint64_t threads_offset = 0;
    uint64_t threads_capacity = 0;
    uint64_t ptrs_offset = 0;
    uint64_t ptrs_capacity = 0;
    uint64_t filter_offset = 0;
    uint64_t filter_capacity = 0;
    uint64_t lock_filter_offset = 0;
    uint64_t lock_filter_capacity = 0;
    uint64_t ring_offset = 0;
    uint64_t ring_size = 0;
    uint64_t size = 0;
    uint32_t max_probe = 0;
    uint32_t stack_bytes = 0;
    uint64_t unwind_offset = 0;
    uint64_t unwind_size = 0;
  };
  // profctl's own record of the unwind region (never read back from the area).
  struct UnwindRegion {
    uint64_t used = 16;  // bytes of the region written so far (bump; offset 0 = no directory)
    struct Placed {
      uint64_t base = 0, start = 0, end = 0;
      uint32_t nrows = 0;
      probe_unwind_module entry{};
    };
    std::vector<Placed> placed;
    size_t published = 0;
  };
  static Result<SharedArea> create_on(const SharedAreaOptions& options, Fd fd);
  SharedArea(Fd fd, void* base, const Layout& layout, pid_t owner)
      : fd_(std::move(fd)), base_(base), size_(layout.size), layout_(layout), owner_pid_(owner) {}
  probe_thread_slot* slots() const;
  probe_thread_slot* find_slot(uint64_t thread_pointer, bool claim) const;
  // Lowers the lock-filter counter a slot's wait raised, if the blob has not yet.
  void uncount_wait(probe_thread_slot& s) const;

  Fd fd_;
  void* base_ = nullptr;
  size_t size_ = 0;
  Layout layout_;
  pid_t owner_pid_ = 0;
  UnwindRegion unwind_;
};

// The slot hash shared with blob.c (must stay identical).
inline uint64_t probe_hash(uint64_t x) {
  return (x * uint64_t{PROBE_HASH_MULTIPLIER}) >> PROBE_HASH_SHIFT;
}

}  // namespace profctl::probe
