// SPDX-License-Identifier: MIT
#include "probe/shared_area.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstring>
#include <utility>

namespace profctl::probe {
namespace {

constexpr uint64_t kPage = 4096;

uint64_t page_up(uint64_t v) { return (v + kPage - 1) / kPage * kPage; }

template <class T>
std::atomic_ref<T> at(T& field) {
  return std::atomic_ref<T>(field);
}

}  // namespace

Result<SharedArea> SharedArea::create(const SharedAreaOptions& o, Fd existing) {
  if (o.thread_capacity == 0 || o.pointer_capacity == 0 || o.ring_bytes < 2 * kPage ||
      o.max_probe == 0) {
    return Error{"probe shared area: capacities must be non-zero, ring >= 8 KiB", 0};
  }
  if (o.thread_capacity > (1ULL << 20) || o.pointer_capacity > (1ULL << 30) ||
      o.ring_bytes > (1ULL << 34)) {
    return Error{"probe shared area: capacity out of range", 0};
  }
  uint64_t threads = std::bit_ceil(o.thread_capacity);
  uint64_t ptrs = std::bit_ceil(o.pointer_capacity);
  uint64_t ring = std::bit_ceil(o.ring_bytes);
  uint64_t threads_off = page_up(sizeof(probe_ctl));
  uint64_t ptrs_off = page_up(threads_off + threads * sizeof(probe_thread_slot));
  uint64_t filter_off = page_up(ptrs_off + ptrs * sizeof(uint64_t));
  uint64_t filters = std::max<uint64_t>(ptrs / 64, 1024);  // 2^22 pointers: 256 KiB
  uint64_t ring_off = page_up(filter_off + filters * sizeof(uint32_t));
  uint64_t size = ring_off + ring;

  // A memfd the target created (attach/ opens it through /proc/PID/fd) or one of our own.
  Fd fd = existing.valid() ? std::move(existing) : Fd(memfd_create("profctl-probe", MFD_CLOEXEC));
  if (!fd.valid()) {
    return errno_error("memfd_create profctl-probe");
  }
  if (ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
    return errno_error("ftruncate probe shared area to " + std::to_string(size));
  }
  if (o.prefault && fallocate(fd.get(), 0, 0, static_cast<off_t>(size)) != 0) {
    return errno_error("fallocate probe shared area (" + std::to_string(size) + " bytes)");
  }
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE,
                    MAP_SHARED | (o.prefault ? MAP_POPULATE : 0), fd.get(), 0);
  if (base == MAP_FAILED) {
    return errno_error("mmap probe shared area");
  }
  SharedArea area(std::move(fd), base, size);
  probe_ctl* c = area.ctl();  // a fresh memfd reads as zeros
  c->abi_version = PROBE_ABI_VERSION;
  c->ctl_size = sizeof(probe_ctl);
  c->area_size = size;
  c->threads_offset = threads_off;
  c->threads_capacity = threads;
  c->ptrs_offset = ptrs_off;
  c->ptrs_capacity = ptrs;
  c->filter_offset = filter_off;
  c->filter_capacity = filters;
  c->ring_offset = ring_off;
  c->ring_size = ring;
  c->max_probe = o.max_probe;
  c->stack_bytes = o.stack_bytes & ~7U;
  c->mem_rate = o.mem_rate;
  c->block_rate_ticks = o.block_rate_ticks;
  c->mutex_fraction = o.mutex_fraction;
  c->owner_pid = o.owner_pid;
  c->enabled = 0;
  at(c->magic).store(PROBE_ABI_MAGIC, std::memory_order_release);
  return area;
}

SharedArea::SharedArea(SharedArea&& other) noexcept
    : fd_(std::move(other.fd_)),
      base_(std::exchange(other.base_, nullptr)),
      size_(std::exchange(other.size_, 0)) {}

SharedArea& SharedArea::operator=(SharedArea&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) {
      munmap(base_, size_);
    }
    fd_ = std::move(other.fd_);
    base_ = std::exchange(other.base_, nullptr);
    size_ = std::exchange(other.size_, 0);
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
  at(ctl()->owner_pid).store(pid, std::memory_order_release);
}

probe_thread_slot* SharedArea::find_slot(uint64_t tp, bool claim) const {
  probe_ctl* c = ctl();
  auto* table = reinterpret_cast<probe_thread_slot*>(data() + c->threads_offset);
  uint64_t mask = c->threads_capacity - 1;
  uint64_t limit = std::min<uint64_t>(c->max_probe, c->threads_capacity);
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

void SharedArea::forget_thread(uint64_t tp) {
  if (probe_thread_slot* s = find_slot(tp, false)) {
    at(s->stack_hi).store(0, std::memory_order_release);
    at(s->tid).store(0, std::memory_order_release);
    // An exited thread's wait is over (a cancellation unwinds past it without returning).
    at(s->wait_active).store(0, std::memory_order_release);
  }
}

namespace {
ActiveWait wait_from(probe_thread_slot& s) {
  ActiveWait w;
  w.key = at(s.key).load(std::memory_order_acquire);
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
  probe_ctl* c = ctl();
  auto* table = reinterpret_cast<probe_thread_slot*>(data() + c->threads_offset);
  for (uint64_t i = 0; i < c->threads_capacity; ++i) {
    if (at(table[i].key).load(std::memory_order_acquire) != 0 &&
        at(table[i].wait_active).load(std::memory_order_acquire) != 0) {
      out.push_back(wait_from(table[i]));
    }
  }
  return out;
}

std::optional<ActiveWait> SharedArea::wait_of(uint64_t tp) const {
  probe_thread_slot* s = tp != 0 ? find_slot(tp, false) : nullptr;
  if (s == nullptr || at(s->wait_active).load(std::memory_order_acquire) == 0) {
    return std::nullopt;
  }
  return wait_from(*s);
}

void SharedArea::clear_wait(uint64_t tp) {
  if (probe_thread_slot* s = find_slot(tp, false)) {
    at(s->wait_active).store(0, std::memory_order_release);
  }
}

ProbeCounters SharedArea::counters() const {
  probe_counters& k = ctl()->counters;
  auto get = [](uint64_t& f) { return at(f).load(std::memory_order_acquire); };
  return ProbeCounters{get(k.records_written),
                       get(k.dropped_ring_full),
                       get(k.dropped_ptr_table_full),
                       get(k.dropped_thread_table_full),
                       get(k.foreign_pid_events),
                       get(k.stack_copy_failed),
                       get(k.inflight),
                       get(k.waits_seen),
                       get(k.waits_recorded)};
}

}  // namespace profctl::probe
