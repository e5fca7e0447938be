// SPDX-License-Identifier: MIT
// The shared area as a hostile target writes it: every field of the control block, the
// thread table and the ring can change at any time. The test plays the target, writing
// through the same mapping: forged layout fields, forged ring indices, a record changed
// while it is read, an endless stream of records. profctl's side must not crash, must
// return from every call, must keep its memory bounded, and must say what it dropped.
#include <gtest/gtest.h>
#include <unistd.h>
#include <x86intrin.h>

#include <atomic>
#include <cstring>
#include <thread>

#include "probe/abi/probe_abi.h"
#include "probe/ring_reader.h"
#include "probe/shared_area.h"
#include "probe/tsc_clock.h"

namespace profctl::probe {
namespace {

template <class T>
std::atomic_ref<T> at(T& field) {
  return std::atomic_ref<T>(field);
}

SharedArea make_area(uint64_t ring = 64 << 10, uint32_t stack_bytes = 4096) {
  SharedAreaOptions o;
  o.ring_bytes = ring;
  o.pointer_capacity = 1024;
  o.thread_capacity = 16;
  o.stack_bytes = stack_bytes;
  o.owner_pid = getpid();
  return std::move(SharedArea::create(o).value());
}

// The target's writer (blob.c's ring_reserve + write_record), with the layout it was given
// at install: the control block's layout fields may be forged by then.
class Writer {
 public:
  explicit Writer(SharedArea& a) : ctl_(a.ctl()), ring_(a.ring()), size_(a.ring_size()) {}

  // Reserves len bytes (padding at the wrap); nullptr when full.
  probe_record* reserve(uint64_t len) {
    uint64_t head = at(ctl_->ring_head).load(std::memory_order_relaxed);
    const uint64_t tail = at(ctl_->ring_tail).load(std::memory_order_acquire);
    const uint64_t off = head & (size_ - 1);
    const uint64_t room = size_ - off;
    const uint64_t total = len <= room ? len : room + len;
    if (head + total - tail > size_) {
      return nullptr;
    }
    at(ctl_->ring_head).store(head + total, std::memory_order_release);
    uint64_t at_off = off;
    if (total != len) {
      at(*reinterpret_cast<uint64_t*>(ring_ + off))
          .store(room | (uint64_t{PROBE_REC_STATE_PADDING} << 32), std::memory_order_release);
      at_off = 0;
    }
    auto* r = reinterpret_cast<probe_record*>(ring_ + at_off);
    at(r->header).store(len | (uint64_t{PROBE_REC_STATE_WRITING} << 32), std::memory_order_relaxed);
    return r;
  }

  static void commit(probe_record* r, uint64_t len) {
    at(r->header).store(len | (uint64_t{PROBE_REC_STATE_COMMITTED} << 32),
                        std::memory_order_release);
  }

  bool put(uint64_t value, uint64_t stack, pid_t pid = getpid()) {
    const uint64_t len = sizeof(probe_record) + stack;
    probe_record* r = reserve(len);
    if (r == nullptr) {
      return false;
    }
    r->kind = PROBE_KIND_MALLOC;
    r->flags = PROBE_REC_ALLOC;
    r->pid = pid;
    r->value = value;
    r->ptr = 0x10000 + value * 16;
    r->rsp = 0x7f0000000000;
    r->stack_len = stack;
    std::memset(r + 1, static_cast<int>(value & 0xff), stack);
    commit(r, len);
    return true;
  }

 private:
  probe_ctl* ctl_;
  std::byte* ring_;
  uint64_t size_;
};

TEST(ProbeHostileArea, ForgedLayoutFieldsAreNeverUsed) {
  SharedArea a = make_area();
  const uint64_t ring_size = a.ring_size();
  probe_ctl* c = a.ctl();
  const auto* slots = reinterpret_cast<const probe_thread_slot*>(a.data() + c->threads_offset);
  struct Forgery {
    uint64_t offset, capacity;
    uint32_t max_probe;
  };
  // Huge, negative, zero and just-out-of-range values, as the crashes used.
  for (const Forgery& f : {Forgery{~0ULL, ~0ULL, ~0U}, Forgery{1ULL << 62, 1ULL << 40, 1U << 31},
                           Forgery{a.size(), 0, 0}, Forgery{a.size() - 64, 1ULL << 20, 64},
                           Forgery{static_cast<uint64_t>(-4096), 3, 7}}) {
    SCOPED_TRACE(f.offset);
    c->threads_offset = f.offset;
    c->threads_capacity = f.capacity;
    c->ptrs_offset = f.offset;
    c->ptrs_capacity = f.capacity;
    c->ring_offset = f.offset;
    c->ring_size = f.capacity;
    c->area_size = f.capacity;
    c->max_probe = f.max_probe;
    c->stack_bytes = f.max_probe;
    c->owner_pid = -1;
    // Every call that looks at the thread table.
    ASSERT_TRUE(a.register_thread(0x7f0000001000, 0x7f0000000000, 0x7f0000001000, 1234));
    EXPECT_FALSE(a.wait_of(0x7f0000001000).has_value());
    EXPECT_LE(a.active_waits().size(), a.thread_capacity());
    a.clear_wait(0x7f0000001000);
    a.forget_thread(0x7f0000001000, 1234);
    // The slot went where profctl put the table, not where the forgery says.
    int found = 0;
    for (uint64_t i = 0; i < a.thread_capacity(); ++i) {
      found += slots[i].key == 0x7f0000001000 ? 1 : 0;
    }
    EXPECT_EQ(found, 1);
    // The reader uses profctl's ring and owner pid.
    EXPECT_EQ(a.ring_size(), ring_size);
    RingReader reader(a);
    Writer w(a);
    ASSERT_TRUE(w.put(7, 64));
    auto got = reader.drain_records();
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].value, 7u);
    EXPECT_EQ(got[0].stack.size(), 64u);
    EXPECT_EQ(reader.stats().corrupt, 0u);
    // The next round's reader starts from a fresh ring.
    c->ring_head = 0;
    c->ring_tail = 0;
  }
}

TEST(ProbeHostileArea, AFullTableOfForgedKeysIsOnlyCompared) {
  SharedArea a = make_area();
  auto* slots = reinterpret_cast<probe_thread_slot*>(a.data() + a.ctl()->threads_offset);
  for (uint64_t i = 0; i < a.thread_capacity(); ++i) {
    slots[i].key = 0x1000 + i;  // every slot taken by the target
    slots[i].wait_active = 1;
    slots[i].wait_slot = ~0ULL;
    slots[i].wait_ret = ~0ULL;
    slots[i].wait_site = ~0U;
  }
  EXPECT_FALSE(a.register_thread(0x7f0000001000, 1, 2));  // full: refused, nothing written
  EXPECT_EQ(a.active_waits().size(), a.thread_capacity());
  for (const ActiveWait& w : a.active_waits()) {
    EXPECT_EQ(w.site, 0x7fffffffU);  // the values are the target's, handed on as data
  }
}

TEST(ProbeHostileArea, ForgedTailAndOwnerPidAreIgnored) {
  SharedArea a = make_area();
  RingReader reader(a);
  Writer w(a);
  ASSERT_TRUE(w.put(1, 16));
  ASSERT_TRUE(w.put(2, 16));
  a.ctl()->ring_tail = 1ULL << 50;    // profctl keeps its own tail
  a.ctl()->owner_pid = getpid() + 1;  // and its own owner pid
  auto got = reader.drain_records();
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].value, 2u);
  EXPECT_EQ(reader.stats().corrupt, 0u);
  EXPECT_EQ(a.ctl()->ring_tail, a.ctl()->ring_head);  // published again for the writers
}

TEST(ProbeHostileArea, ForgedHeadIsACorruptRingAndTheReaderGivesUp) {
  SharedArea a = make_area();
  RingReader reader(a, std::chrono::seconds(2), RingReaderLimits{.max_resyncs = 4});
  Writer w(a);
  probe_ctl* c = a.ctl();
  ASSERT_TRUE(w.put(1, 16));
  EXPECT_EQ(reader.drain_records().size(), 1u);
  // Far ahead (the endless resync of the issue), behind the tail, not a multiple of 8, just
  // over a ring ahead: each relative to the tail the reader published.
  const uint64_t forged[] = {1ULL << 62, static_cast<uint64_t>(-8), 13, a.ring_size() + 8};
  for (uint64_t delta : forged) {
    SCOPED_TRACE(delta);
    c->ring_head = c->ring_tail + delta;
    EXPECT_EQ(reader.drain_records().size(), 0u);  // returns
  }
  EXPECT_EQ(reader.stats().corrupt, 4u);
  EXPECT_TRUE(reader.gave_up());
  EXPECT_NE(reader.note().find("corrupt 4 times"), std::string::npos) << reader.note();
  EXPECT_NE(reader.note().find("stopped reading"), std::string::npos) << reader.note();
  // Given up: valid records are no longer read.
  c->ring_head = c->ring_tail;
  ASSERT_TRUE(w.put(2, 16));
  EXPECT_EQ(reader.drain_records().size(), 0u);
  EXPECT_LE(reader.stats().bytes, 5 * a.ring_size());
}

// The endless loop: garbage at the tail with a head far ahead made the resync
// consume the ring 2^46 times over.
TEST(ProbeHostileArea, GarbageUnderAFarHeadIsDroppedInOnePass) {
  SharedArea a = make_area();
  RingReader reader(a);
  *reinterpret_cast<uint64_t*>(a.ring()) = 8 | (uint64_t{7} << 32);  // no such state
  a.ctl()->ring_head = 1ULL << 62;
  EXPECT_EQ(reader.drain_records().size(), 0u);
  EXPECT_EQ(reader.stats().corrupt, 1u);
  EXPECT_LE(reader.stats().bytes, a.ring_size());
  EXPECT_EQ(a.ctl()->ring_tail, 1ULL << 62);
}

TEST(ProbeHostileArea, OneResyncIsANoteNotTheEnd) {
  SharedArea a = make_area();
  RingReader reader(a);
  Writer w(a);
  a.ctl()->ring_head = 1ULL << 40;
  EXPECT_EQ(reader.drain_records().size(), 0u);
  EXPECT_FALSE(reader.gave_up());
  ASSERT_TRUE(w.put(3, 16));  // the writers go on from the forged head
  auto got = reader.drain_records();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].value, 3u);
  EXPECT_NE(reader.note().find("corrupt 1 times"), std::string::npos) << reader.note();
}

TEST(ProbeHostileArea, AnUncommittedEntryWithABadLengthIsDroppedAfterTheTimeout) {
  SharedArea a = make_area();
  RingReader reader(a, std::chrono::milliseconds(20));
  Writer w(a);
  probe_record* r = w.reserve(sizeof(probe_record));
  ASSERT_NE(r, nullptr);
  r->header = (1ULL << 31) | (uint64_t{PROBE_REC_STATE_WRITING} << 32);  // len beyond the ring
  EXPECT_EQ(reader.drain_records().size(), 0u);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(reader.drain_records().size(), 0u);
  EXPECT_EQ(reader.stats().corrupt, 1u);
  EXPECT_EQ(reader.stats().abandoned, 0u);
  ASSERT_TRUE(w.put(4, 16));
  EXPECT_EQ(reader.drain_records().size(), 1u);
}

TEST(ProbeHostileArea, TheStackBudgetIsProfctlsNotTheRecords) {
  SharedArea a = make_area(256 << 10, 1024);
  a.ctl()->stack_bytes = 1U << 30;  // the target raises the budget it was given
  RingReader reader(a);
  Writer w(a);
  ASSERT_TRUE(w.put(5, 64 << 10));
  auto got = reader.drain_records();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].stack.size(), 1024u);
  EXPECT_TRUE(got[0].flags & PROBE_REC_STACK_CUT);
  EXPECT_EQ(static_cast<uint8_t>(got[0].stack[1023]), 5u);
  EXPECT_EQ(reader.stats().stack_cut, 1u);
  EXPECT_NE(reader.note().find("cut to it"), std::string::npos) << reader.note();
}

// A thread flips a committed record's stack_len (and its header) between a valid and a
// huge value while the reader drains it again and again: every record handed out must be
// the one copy the reader validated.
TEST(ProbeHostileArea, ARecordChangedWhileReadIsReadOnce) {
  SharedArea a = make_area(64 << 10, 4096);
  // Never give up here: the point is every read of a record under change.
  RingReader reader(a, std::chrono::seconds(2), RingReaderLimits{.max_resyncs = UINT64_MAX});
  Writer w(a);
  std::atomic<probe_record*> current{nullptr};
  std::atomic<probe_record*> flipping{nullptr};  // the record the flipper is at work on
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    uint64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      probe_record* r = current.load(std::memory_order_acquire);
      if (r != nullptr) {
        at(r->stack_len).store((++n & 1) ? (1ULL << 40) : 256, std::memory_order_relaxed);
        if ((n & 7) == 0) {
          at(r->header).store(((n & 8) ? (1ULL << 31) : sizeof(probe_record) + 256) |
                                  (uint64_t{PROBE_REC_STATE_COMMITTED} << 32),
                              std::memory_order_relaxed);
        }
      }
      flipping.store(r, std::memory_order_release);
    }
  });
  uint64_t handed = 0;
  uint64_t overlapped = 0;  // rounds read while the flipper was flipping that record
  // Until 200 reads overlapped the flips (the flipper may be scheduled late on a busy
  // machine), and at least 500 rounds; bounded either way.
  for (uint64_t round = 0; round < 200000 && (round < 500 || overlapped < 200); ++round) {
    probe_record* r = w.reserve(sizeof(probe_record) + 256);
    if (r == nullptr) {
      reader.drain([](const RecordView&) {});
      continue;
    }
    r->pid = getpid();
    r->stack_len = 256;
    current.store(r, std::memory_order_release);
    Writer::commit(r, sizeof(probe_record) + 256);
    for (int spin = 0; spin < 1000 && flipping.load(std::memory_order_acquire) != r; ++spin) {
      std::this_thread::yield();
    }
    overlapped += flipping.load(std::memory_order_acquire) == r ? 1 : 0;
    reader.drain([&](const RecordView& v) {
      EXPECT_EQ(v.stack.size(), v.rec.stack_len);
      EXPECT_LE(v.stack.size(), 256u);
      ++handed;
    });
    current.store(nullptr, std::memory_order_release);
  }
  stop.store(true);
  flipper.join();
  // Records were read whole when the flips let them be, and the forged ones were counted.
  EXPECT_GT(handed, 0u);
  EXPECT_GT(reader.stats().corrupt, 0u);
  EXPECT_FALSE(reader.gave_up());
  EXPECT_GE(overlapped, 200u);
  RecordProperty("handed", static_cast<int>(handed));
  RecordProperty("corrupt", static_cast<int>(reader.stats().corrupt));
}

// A target writing valid records as fast as it can: each drain returns after at most a
// ring's worth, whatever the writer does meanwhile.
TEST(ProbeHostileArea, AnEndlessStreamOfRecordsCannotKeepADrainGoing) {
  SharedArea a = make_area(64 << 10, 4096);
  RingReader reader(a);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    Writer w(a);
    uint64_t v = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      (void)w.put(++v, 512);
    }
  });
  // 100 rings' worth of records, read while the writer keeps writing.
  const uint64_t want = 100 * a.ring_size() / (sizeof(probe_record) + 512);
  uint64_t handed = 0;
  while (handed < want) {
    const uint64_t before = reader.stats().bytes;
    handed += reader.drain([](const RecordView& v) { ASSERT_EQ(v.stack.size(), 512u); });
    EXPECT_LE(reader.stats().bytes - before, a.ring_size());
  }
  stop.store(true);
  writer.join();
  EXPECT_EQ(reader.stats().corrupt, 0u);
  EXPECT_FALSE(reader.gave_up());
}

// A record's TSC and delay are the target's words: any u64 converts to a clamped time.
TEST(ProbeHostileArea, ForgedTimesAreClamped) {
  const TscClock c = TscClock::calibrate(std::chrono::milliseconds(5));
  EXPECT_LE(c.ticks_to_ns(UINT64_MAX), 18'000'000'000'000'000'000ULL);
  EXPECT_GT(c.ticks_to_ns(UINT64_MAX), 0u);
  const uint64_t now = c.to_monotonic_ns(__rdtsc());
  (void)c.to_monotonic_ns(UINT64_MAX);
  (void)c.to_monotonic_ns(0);
  EXPECT_GT(now, 0u);
}

}  // namespace
}  // namespace profctl::probe
