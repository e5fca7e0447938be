// SPDX-License-Identifier: MIT
#include "probe/shared_area.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <utility>

#include "probe/tsc_clock.h"

namespace profctl::probe {
namespace {

constexpr uint64_t kPage = 4096;
// Lock-filter counters (probe_ctl.lock_filter_*): far more than the locks with a recorded
// waiter at once, so a release rarely shares a counter with another lock's waiter.
constexpr uint64_t kLockFilterCapacity = 4096;

uint64_t page_up(uint64_t v) { return (v + kPage - 1) / kPage * kPage; }

template <class T>
std::atomic_ref<T> at(T& field) {
  return std::atomic_ref<T>(field);
}

}  // namespace

Result<SharedArea> SharedArea::create(const SharedAreaOptions& o) {
  Fd fd(memfd_create("profctl-probe", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd.valid()) {
    return errno_error("memfd_create profctl-probe");
  }
  return create_on(o, std::move(fd));
}

Result<SharedArea> SharedArea::create(const SharedAreaOptions& o, ProvenMemfd memfd) {
  return create_on(o, std::move(memfd).release());
}

Result<SharedArea> SharedArea::create_on(const SharedAreaOptions& o, Fd fd) {
  if (o.thread_capacity == 0 || o.pointer_capacity == 0 || o.ring_bytes < 2 * kPage ||
      o.max_probe == 0) {
    return Error{"probe shared area: capacities must be non-zero, ring >= 8 KiB", 0};
  }
  if (o.thread_capacity > (1ULL << 20) || o.pointer_capacity > (1ULL << 30) ||
      o.ring_bytes > (1ULL << 34) || o.stack_bytes > (1U << 24) || o.unwind_bytes > (1ULL << 32) ||
      o.stack_id_capacity > (1ULL << 26)) {
    return Error{"probe shared area: capacity out of range", 0};
  }
  Layout l;
  l.threads_capacity = std::bit_ceil(o.thread_capacity);
  l.ptrs_capacity = std::bit_ceil(o.pointer_capacity);
  l.ring_size = std::bit_ceil(o.ring_bytes);
  l.threads_offset = page_up(sizeof(probe_ctl));
  l.ptrs_offset = page_up(l.threads_offset + l.threads_capacity * sizeof(probe_thread_slot));
  l.filter_offset = page_up(l.ptrs_offset + l.ptrs_capacity * sizeof(uint64_t));
  l.filter_capacity = std::max<uint64_t>(l.ptrs_capacity / 64, 1024);  // 2^22 pointers: 256 KiB
  l.lock_filter_offset = page_up(l.filter_offset + l.filter_capacity * sizeof(uint32_t));
  l.lock_filter_capacity = kLockFilterCapacity;
  const uint64_t stack_ids = o.unwind_bytes == 0 ? 0 : std::bit_ceil(o.stack_id_capacity);
  const uint64_t stackid_offset =
      page_up(l.lock_filter_offset + l.lock_filter_capacity * sizeof(uint32_t));
  const uint64_t scratch_offset = page_up(stackid_offset + stack_ids * sizeof(uint64_t));
  const uint64_t scratch_bytes =
      o.unwind_bytes == 0 ? 0 : l.threads_capacity * 2 * PROBE_SCRATCH_WORDS * sizeof(uint64_t);
  l.unwind_offset = page_up(scratch_offset + scratch_bytes);
  l.unwind_size = page_up(o.unwind_bytes);
  l.ring_offset = page_up(l.unwind_offset + l.unwind_size);
  l.size = l.ring_offset + l.ring_size;
  l.max_probe = o.max_probe;
  l.stack_bytes = o.stack_bytes & ~7U;
  const uint64_t size = l.size;

  if (ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return errno_error("ftruncate probe shared area to " + std::to_string(size));
  }
  if (o.prefault && fallocate(fd.get(), 0, 0, static_cast<off_t>(size)) != 0) {
    return errno_error("fallocate probe shared area (" + std::to_string(size) + " bytes)");
  }
  // Sealed before the mapping exists: from here on no holder of the memfd (the target, a
  // process sharing its fd table) can shrink it under profctl's mapping (a SIGBUS here) or
  // grow it. Read back with the size: a holder that sealed or resized it first loses.
  constexpr int kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
  if (fcntl(fd.get(), F_ADD_SEALS, kSeals) != 0) {
    return errno_error("sealing the probe shared area");
  }
  struct stat st {};
  if (fcntl(fd.get(), F_GET_SEALS) != kSeals || fstat(fd.get(), &st) != 0 ||
      static_cast<uint64_t>(st.st_size) != size) {
    return Error{
        "the probe shared area changed while profctl sized it (another process holds "
        "its memfd); probes refused",
        0};
  }
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                    MAP_SHARED | (o.prefault ? MAP_POPULATE : 0), fd.get(), 0);
  if (base == MAP_FAILED) {
    return errno_error("mmap probe shared area");
  }
  SharedArea area(std::move(fd), base, l, o.owner_pid);
  // Written once for the blob, which reads its layout from here. It is never read back.
  probe_ctl* c = area.ctl();
  c->abi_version = PROBE_ABI_VERSION;
  c->ctl_size = sizeof(probe_ctl);
  c->area_size = size;
  c->threads_offset = l.threads_offset;
  c->threads_capacity = l.threads_capacity;
  c->ptrs_offset = l.ptrs_offset;
  c->ptrs_capacity = l.ptrs_capacity;
  c->filter_offset = l.filter_offset;
  c->filter_capacity = l.filter_capacity;
  c->lock_filter_offset = l.lock_filter_offset;
  c->lock_filter_capacity = l.lock_filter_capacity;
  c->ring_offset = l.ring_offset;
  c->ring_size = l.ring_size;
  c->max_probe = l.max_probe;
  c->stack_bytes = l.stack_bytes;
  c->mem_rate = o.mem_rate;
  c->block_rate_ticks = o.block_rate_ticks;
  c->mutex_fraction = o.mutex_fraction;
  c->owner_pid = o.owner_pid;
  c->enabled = 0;
  if (o.unwind_bytes != 0) {
    c->stackid_offset = stackid_offset;
    c->stackid_capacity = stack_ids;
    c->scratch_offset = scratch_offset;
    c->unwind_offset = l.unwind_offset;
    c->unwind_size = l.unwind_size;
  }
  c->unwind_dir = 0;
  c->ring_wait = o.ring_wait && o.liveness_ticks != 0 ? 1 : 0;
  c->liveness_ticks = o.liveness_ticks;
  c->heartbeat_tsc = read_tsc();
  at(c->magic).store(PROBE_ABI_MAGIC, std::memory_order_release);
  return area;
}

SharedArea::SharedArea(SharedArea&& other) noexcept
    : fd_(std::move(other.fd_)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      layout_(std::exchange(other.layout_, Layout{})),
      owner_pid_(std::exchange(other.owner_pid_, 0)),
      unwind_(std::exchange(other.unwind_, UnwindRegion{})) {}

SharedArea& SharedArea::operator=(SharedArea&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) {
      munmap(base_, size_);
    }
    fd_ = std::move(other.fd_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
    layout_ = std::exchange(other.layout_, Layout{});
    owner_pid_ = std::exchange(other.owner_pid_, 0);
    unwind_ = std::exchange(other.unwind_, UnwindRegion{});
  }
  return *this;
}

SharedArea::~SharedArea() {
  if (base_ != nullptr) {
    munmap(base_, size_);
  }
}

void SharedArea::set_enabled(bool on) {
  at(ctl()->enabled).store(on ? 1 : 0, std::memory_order_release);
}

bool SharedArea::enabled() const { return at(ctl()->enabled).load(std::memory_order_acquire) != 0; }

void SharedArea::set_mem_rate(int64_t rate) {
  at(ctl()->mem_rate).store(rate, std::memory_order_release);
}

void SharedArea::set_owner_pid(pid_t pid) {
  owner_pid_ = pid;
  at(ctl()->owner_pid).store(pid, std::memory_order_release);
}

probe_thread_slot* SharedArea::slots() const {
  return reinterpret_cast<probe_thread_slot*>(data() + layout_.threads_offset);
}

// Only the slot keys come from the area (compared, never used as an index): the table's
// place, size and probing bound are profctl's.
probe_thread_slot* SharedArea::find_slot(uint64_t tp, bool claim) const {
  if (base_ == nullptr || layout_.threads_capacity == 0) {
    return nullptr;
  }
  probe_thread_slot* table = slots();
  const uint64_t mask = layout_.threads_capacity - 1;
  const uint64_t limit = std::min<uint64_t>(layout_.max_probe, layout_.threads_capacity);
  uint64_t i = probe_hash(tp) & mask;
  for (uint64_t n = 0; n < limit; ++n, i = (i + 1) & mask) {
    uint64_t key = at(table[i].key).load(std::memory_order_acquire);
    if (key == tp) {
      return &table[i];
    }
    if (key == 0) {
      if (!claim) {
        return nullptr;
      }
      uint64_t expected = 0;
      if (at(table[i].key).compare_exchange_strong(expected, tp, std::memory_order_acq_rel) ||
          expected == tp) {
        return &table[i];
      }
    }
  }
  return nullptr;
}

Result<void> SharedArea::register_thread(uint64_t tp, uint64_t stack_lo, uint64_t stack_hi,
                                         pid_t tid) {
  if (tp == 0 || stack_lo >= stack_hi) {
    return Error{"register_thread: bad thread pointer or stack bounds", 0};
  }
  probe_thread_slot* s = find_slot(tp, true);
  if (s == nullptr) {
    return Error{"register_thread: thread table full", 0};
  }
  // hi = 0 first: a reader that sees the old hi before and after its read of lo, or the
  // new one both times, holds a consistent pair (blob.c write_record).
  at(s->stack_hi).store(0, std::memory_order_release);
  at(s->stack_lo).store(stack_lo, std::memory_order_release);
  at(s->stack_hi).store(stack_hi, std::memory_order_release);
  at(s->tid).store(tid, std::memory_order_release);
  return {};
}

void SharedArea::forget_thread(uint64_t tp, pid_t tid) {
  probe_thread_slot* s = find_slot(tp, false);
  if (s == nullptr) {
    return;
  }
  // The exit is reported late: a new thread may already own the same TCB (glibc reuses
  // thread stacks), be registered, and be in a wait of its own. Only the exited thread's
  // registration is undone; the new one's stays.
  int32_t expected = tid;
  if (!at(s->tid).compare_exchange_strong(expected, 0, std::memory_order_acq_rel)) {
    return;
  }
  at(s->stack_hi).store(0, std::memory_order_release);
  // An exited thread's wait is over (a cancellation unwinds past it without returning).
  uncount_wait(*s);
  at(s->wait_active).store(0, std::memory_order_release);
}

// The slot's word is the target's: it selects a counter only within profctl's own filter.
void SharedArea::uncount_wait(probe_thread_slot& s) const {
  const uint64_t counted = at(s.wait_counted).exchange(0, std::memory_order_acq_rel);
  if (counted == 0 || layout_.lock_filter_capacity == 0) {
    return;
  }
  auto* filter = reinterpret_cast<uint32_t*>(data() + layout_.lock_filter_offset);
  at(filter[(counted - 1) & (layout_.lock_filter_capacity - 1)])
      .fetch_sub(1, std::memory_order_acq_rel);
}

namespace {
// Each field once; `key` as the caller read it.
ActiveWait wait_from(probe_thread_slot& s, uint64_t key) {
  ActiveWait w;
  w.key = key;
  w.tid = at(s.tid).load(std::memory_order_acquire);
  w.site = at(s.wait_site).load(std::memory_order_acquire) & 0x7fffffffU;
  w.ret = at(s.wait_ret).load(std::memory_order_acquire);
  w.slot = at(s.wait_slot).load(std::memory_order_acquire);
  w.tsc0 = at(s.wait_tsc0).load(std::memory_order_acquire);
  w.lock = at(s.wait_addr).load(std::memory_order_acquire);
  return w;
}
}  // namespace

std::vector<ActiveWait> SharedArea::active_waits() const {
  std::vector<ActiveWait> out;
  if (base_ == nullptr) {
    return out;
  }
  probe_thread_slot* table = slots();
  for (uint64_t i = 0; i < layout_.threads_capacity; ++i) {
    const uint64_t key = at(table[i].key).load(std::memory_order_acquire);
    if (key != 0 && at(table[i].wait_active).load(std::memory_order_acquire) != 0) {
      out.push_back(wait_from(table[i], key));
    }
  }
  return out;
}

std::optional<ActiveWait> SharedArea::wait_of(uint64_t tp) const {
  probe_thread_slot* s = tp != 0 ? find_slot(tp, false) : nullptr;
  if (s == nullptr || at(s->wait_active).load(std::memory_order_acquire) == 0) {
    return std::nullopt;
  }
  return wait_from(*s, tp);
}

void SharedArea::clear_wait(uint64_t tp) {
  if (probe_thread_slot* s = find_slot(tp, false)) {
    uncount_wait(*s);
    at(s->wait_active).store(0, std::memory_order_release);
  }
}

ProbeCounters SharedArea::counters() const {
  probe_counters& k = ctl()->counters;
  auto get = [](uint64_t& f) { return at(f).load(std::memory_order_acquire); };
  // Per thread slot (ABI v7): the records each thread committed, and whether it is inside a
  // call-through (depth > 0). The table's place and size are profctl's own.
  uint64_t records = 0;
  uint64_t inflight = 0;
  probe_thread_slot* table = slots();
  for (uint64_t i = 0; base_ != nullptr && i < layout_.threads_capacity; ++i) {
    records += at(table[i].records).load(std::memory_order_relaxed);
    inflight += at(table[i].depth).load(std::memory_order_acquire) != 0 ? 1 : 0;
  }
  return ProbeCounters{records,
                       get(k.dropped_ring_full),
                       get(k.dropped_ptr_table_full),
                       get(k.dropped_thread_table_full),
                       get(k.foreign_pid_events),
                       get(k.stack_copy_failed),
                       inflight,
                       get(k.waits_seen),
                       get(k.waits_recorded),
                       get(k.dropped_ring_alloc),
                       get(k.dropped_ring_free),
                       get(k.dropped_ring_mutex),
                       get(k.dropped_ring_block),
                       get(k.walk_fallbacks),
                       get(k.ring_waits),
                       get(k.dropped_stalled)};
}

}  // namespace profctl::probe

namespace profctl::probe {

size_t SharedArea::publish_unwind_tables(std::vector<UnwindModule> modules) {
  if (base_ == nullptr || layout_.unwind_size == 0) {
    return 0;
  }
  std::sort(modules.begin(), modules.end(),
            [](const UnwindModule& a, const UnwindModule& b) { return a.start < b.start; });
  std::byte* region = data() + layout_.unwind_offset;
  const uint64_t size = layout_.unwind_size;
  auto place = [&](std::span<const std::byte> bytes) -> std::optional<uint64_t> {
    const uint64_t off = (unwind_.used + 15) & ~uint64_t{15};
    if (off > size || bytes.size() > size - off) {
      return std::nullopt;
    }
    std::memcpy(region + off, bytes.data(), bytes.size());
    unwind_.used = off + bytes.size();
    return off;
  };
  std::vector<probe_unwind_module> dir;
  uint64_t last_end = 0;
  for (const UnwindModule& m : modules) {
    const size_t nrows = m.rows.size() / sizeof(probe_unwind_row);
    if (m.start >= m.end || m.start < last_end || nrows == 0 || m.blocks.size() < 2 ||
        nrows > UINT32_MAX || m.blocks.size() > UINT32_MAX) {
      continue;
    }
    const UnwindRegion::Placed* found = nullptr;
    for (const auto& p : unwind_.placed) {
      if (p.base == m.base && p.start == m.start && p.end == m.end && p.nrows == nrows) {
        found = &p;
      }
    }
    probe_unwind_module e{};
    if (found != nullptr) {
      e = found->entry;
    } else {
      auto rows = place(m.rows);
      auto blocks = rows ? place(std::as_bytes(m.blocks)) : std::nullopt;
      if (!rows || !blocks) {
        continue;  // no room: this module's stacks are copied
      }
      e.start = m.start;
      e.end = m.end;
      e.base = m.base;
      e.rows = *rows;
      e.blocks = *blocks;
      e.nrows = static_cast<uint32_t>(nrows);
      e.nblocks = static_cast<uint32_t>(m.blocks.size() - 1);
      e.block_shift = m.block_shift;
      unwind_.placed.push_back({m.base, m.start, m.end, e.nrows, e});
    }
    dir.push_back(e);
    last_end = m.end;
  }
  std::vector<std::byte> bytes(sizeof(probe_unwind_dir) + dir.size() * sizeof(probe_unwind_module));
  probe_unwind_dir head{static_cast<uint32_t>(dir.size()), 0};
  std::memcpy(bytes.data(), &head, sizeof head);
  if (!dir.empty()) {
    std::memcpy(bytes.data() + sizeof head, dir.data(), dir.size() * sizeof(probe_unwind_module));
  }
  auto at_dir = dir.empty() ? std::nullopt : place(bytes);
  if (!at_dir) {
    return unwind_.published;
  }
  at(ctl()->unwind_dir).store(*at_dir, std::memory_order_release);
  unwind_.published = dir.size();
  return dir.size();
}

void SharedArea::heartbeat() {
  if (base_ != nullptr) {
    at(ctl()->heartbeat_tsc).store(read_tsc(), std::memory_order_release);
  }
}

bool SharedArea::stalled() const {
  return base_ != nullptr && at(ctl()->stalled).load(std::memory_order_acquire) != 0;
}

void SharedArea::resume_after_stall() {
  heartbeat();
  at(ctl()->stalled).store(0, std::memory_order_release);
  set_enabled(true);
}

}  // namespace profctl::probe
