// SPDX-License-Identifier: MIT
// SharedArea and RingReader without any trampoline: records written by hand the way the
// blob writes them, including the cases a live target produces rarely (padding at the
// wrap, a writer that died mid-record, foreign pids, garbage).
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "probe/abi/probe_abi.h"
#include "probe/ring_reader.h"
#include "probe/shared_area.h"

namespace profctl::probe {
namespace {

SharedArea small_area(uint64_t ring = 8192) {
  SharedAreaOptions o;
  o.ring_bytes = ring;
  o.pointer_capacity = 1024;
  o.thread_capacity = 16;
  o.owner_pid = getpid();
  return std::move(SharedArea::create(o).value());
}

// A writer as blob.c's ring_reserve + write_record, single-threaded.
probe_record* reserve(SharedArea& a, uint64_t len) {
  probe_ctl* c = a.ctl();
  std::byte* ring = a.data() + c->ring_offset;
  uint64_t head = c->ring_head;
  uint64_t off = head & (c->ring_size - 1);
  uint64_t room = c->ring_size - off;
  uint64_t total = len <= room ? len : room + len;
  if (head + total - c->ring_tail > c->ring_size) {
    return nullptr;
  }
  c->ring_head = head + total;
  if (total != len) {
    *reinterpret_cast<uint64_t*>(ring + off) = room | (uint64_t{PROBE_REC_STATE_PADDING} << 32);
    off = 0;
  }
  auto* r = reinterpret_cast<probe_record*>(ring + off);
  r->header = len | (uint64_t{PROBE_REC_STATE_WRITING} << 32);
  return r;
}

void commit(probe_record* r, uint64_t len) {
  std::atomic_ref<uint64_t>(r->header).store(len | (uint64_t{PROBE_REC_STATE_COMMITTED} << 32),
                                             std::memory_order_release);
}

bool put(SharedArea& a, uint64_t value, size_t stack = 16, pid_t pid = getpid()) {
  uint64_t len = sizeof(probe_record) + stack;
  probe_record* r = reserve(a, len);
  if (r == nullptr) {
    return false;
  }
  r->kind = PROBE_KIND_MALLOC;
  r->pid = pid;
  r->value = value;
  r->rsp = 0x1000;
  r->stack_len = stack;
  std::memset(r + 1, static_cast<int>(value & 0xff), stack);
  commit(r, len);
  return true;
}

TEST(ProbeSharedArea, LayoutAndOptions) {
  SharedAreaOptions o;
  o.ring_bytes = 100000;  // rounded up to 128 KiB
  o.thread_capacity = 100;
  o.pointer_capacity = 1000;
  o.owner_pid = 42;
  auto a = SharedArea::create(o);
  ASSERT_TRUE(a) << a.error().message();
  const probe_ctl* c = a->ctl();
  EXPECT_EQ(c->magic, PROBE_ABI_MAGIC);
  EXPECT_EQ(c->ring_size, 131072u);
  EXPECT_EQ(c->threads_capacity, 128u);
  EXPECT_EQ(c->ptrs_capacity, 1024u);
  EXPECT_EQ(c->owner_pid, 42);
  EXPECT_EQ(c->enabled, 0u);
  EXPECT_EQ(c->ring_offset + c->ring_size, a->size());
  EXPECT_EQ(c->ring_offset % 4096, 0u);
  EXPECT_GE(a->fd(), 0);
  a->set_enabled(true);
  EXPECT_TRUE(a->enabled());

  SharedAreaOptions bad;
  bad.ring_bytes = 100;
  EXPECT_FALSE(SharedArea::create(bad));
  bad = SharedAreaOptions{};
  bad.thread_capacity = 0;
  EXPECT_FALSE(SharedArea::create(bad));
}

// glibc reuses a thread's stack, and so its TCB, for the next thread, and the old one's
// exit can be reported after the new one is registered and waiting: forgetting the old
// thread must leave the new one's registration and wait alone.
TEST(ProbeSharedArea, ALateExitLeavesTheNextThreadOnTheSameTcbAlone) {
  SharedArea a = small_area();
  const uint64_t tcb = 0x7f0000002000;
  ASSERT_TRUE(a.register_thread(tcb, 0x7f0000000000, tcb, 100));
  ASSERT_TRUE(a.register_thread(tcb, 0x7f0000000000, tcb, 200));  // the next thread
  probe_ctl* c = a.ctl();
  auto* slots = reinterpret_cast<probe_thread_slot*>(a.data() + c->threads_offset);
  probe_thread_slot* slot = nullptr;
  for (uint64_t i = 0; i < c->threads_capacity; ++i) {
    slot = slots[i].key == tcb ? &slots[i] : slot;
  }
  ASSERT_NE(slot, nullptr);
  slot->wait_active = 1;  // the new thread waits (hijacked)
  a.forget_thread(tcb, 100);
  EXPECT_EQ(slot->tid, 200);
  EXPECT_EQ(slot->stack_hi, tcb);
  EXPECT_EQ(slot->wait_active, 1u);
  EXPECT_TRUE(a.wait_of(tcb).has_value());
  a.forget_thread(tcb, 200);  // its own exit
  EXPECT_EQ(slot->tid, 0);
  EXPECT_EQ(slot->stack_hi, 0u);
  EXPECT_EQ(slot->wait_active, 0u);
}

TEST(ProbeSharedArea, RegisterThreadClaimsAndUpdatesASlot) {
  SharedArea a = small_area();
  ASSERT_TRUE(a.register_thread(0x7f0000001000, 0x7f0000000000, 0x7f0000001000));
  ASSERT_TRUE(a.register_thread(0x7f0000001000, 0x7f0000000100, 0x7f0000001000));  // update
  const probe_ctl* c = a.ctl();
  auto* slots = reinterpret_cast<const probe_thread_slot*>(a.data() + c->threads_offset);
  int found = 0;
  for (uint64_t i = 0; i < c->threads_capacity; ++i) {
    if (slots[i].key == 0x7f0000001000) {
      ++found;
      EXPECT_EQ(slots[i].stack_lo, 0x7f0000000100u);
      EXPECT_EQ(slots[i].stack_hi, 0x7f0000001000u);
    }
  }
  EXPECT_EQ(found, 1);
  a.forget_thread(0x7f0000001000, 0);
  EXPECT_FALSE(a.register_thread(0, 1, 2));
  EXPECT_FALSE(a.register_thread(5, 2, 1));
  // 16 slots, 16 probes: the 17th thread finds the table full.
  for (uint64_t t = 1; t < 16; ++t) {
    ASSERT_TRUE(a.register_thread(0x1000 * (t + 100), 1, 2));
  }
  EXPECT_FALSE(a.register_thread(0xdead000, 1, 2));
}

TEST(ProbeRingReader, DrainsInOrderAcrossTheWrap) {
  SharedArea a = small_area(8192);
  RingReader reader(a);
  uint64_t next = 0, seen = 0;
  auto check = [&](const RecordView& v) {
    EXPECT_EQ(v.rec.value, seen);
    EXPECT_EQ(v.stack.size(), 200u);
    EXPECT_EQ(static_cast<uint8_t>(v.stack[0]), seen & 0xff);
    ++seen;
  };
  // 360-byte records do not divide 8 KiB: every pass over the ring ends in a padding.
  for (int round = 0; round < 20; ++round) {
    while (put(a, next, 200)) {
      ++next;
    }
    reader.drain(check);
    EXPECT_EQ(seen, next);
  }
  EXPECT_GT(next, 8192u / 360 * 10);
  EXPECT_EQ(reader.stats().corrupt, 0u);
  EXPECT_EQ(a.ctl()->ring_tail, a.ctl()->ring_head);
}

TEST(ProbeRingReader, StopsAtAnUncommittedRecordThenSkipsItAfterTheTimeout) {
  SharedArea a = small_area();
  RingReader reader(a, std::chrono::milliseconds(50));
  ASSERT_TRUE(put(a, 1));
  probe_record* dead = reserve(a, sizeof(probe_record));  // its writer "died"
  ASSERT_NE(dead, nullptr);
  ASSERT_TRUE(put(a, 3));
  auto first = reader.drain_records();
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].value, 1u);
  EXPECT_TRUE(reader.drain_records().empty());  // still within the timeout
  std::this_thread::sleep_for(std::chrono::milliseconds(60));
  auto rest = reader.drain_records();
  ASSERT_EQ(rest.size(), 1u);
  EXPECT_EQ(rest[0].value, 3u);
  EXPECT_EQ(reader.stats().abandoned, 1u);
}

TEST(ProbeRingReader, ForeignPidRecordsAreCountedNotHandedOut) {
  SharedArea a = small_area();
  RingReader reader(a);
  ASSERT_TRUE(put(a, 1, 16, getpid() + 1));
  ASSERT_TRUE(put(a, 2));
  auto got = reader.drain_records();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].value, 2u);
  EXPECT_EQ(reader.stats().foreign_pid, 1u);
}

TEST(ProbeRingReader, GarbageResynchronizes) {
  SharedArea a = small_area();
  RingReader reader(a);
  ASSERT_TRUE(put(a, 1));
  probe_record* r = reserve(a, sizeof(probe_record) + 64);
  r->stack_len = 1 << 20;  // longer than the record: a lie
  commit(r, sizeof(probe_record) + 64);
  ASSERT_TRUE(put(a, 3));
  auto got = reader.drain_records();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(reader.stats().corrupt, 1u);
  EXPECT_EQ(a.ctl()->ring_tail, a.ctl()->ring_head);
  // The reader goes on after a resync.
  ASSERT_TRUE(put(a, 4));
  got = reader.drain_records();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].value, 4u);
  // A bad length (not a multiple of 8) is garbage too.
  probe_record* odd = reserve(a, sizeof(probe_record));
  odd->header = 13 | (uint64_t{PROBE_REC_STATE_COMMITTED} << 32);
  EXPECT_TRUE(reader.drain_records().empty());
  EXPECT_EQ(reader.stats().corrupt, 2u);
}

// A walked record as blob.c's write_walked writes it: the 32 bytes, the non-zero fields in
// bit order, then the pcs.
bool put_walked(SharedArea& a, uint32_t fields, std::vector<uint64_t> words,
                std::vector<uint64_t> pcs, uint64_t extra_len = 0) {
  const uint64_t len = sizeof(probe_record_walked) + (words.size() + pcs.size()) * 8 + extra_len;
  probe_record* r = reserve(a, len);
  if (r == nullptr) {
    return false;
  }
  auto* w = reinterpret_cast<probe_record_walked*>(r);
  w->kind = PROBE_KIND_MALLOC;
  w->flags = PROBE_REC_WALKED | PROBE_REC_ALLOC;
  w->site = 3;
  w->fields = static_cast<uint8_t>(fields);
  w->npcs = static_cast<uint8_t>(pcs.size());
  w->pid = getpid();
  w->tid = 77;
  w->tsc = 12345;
  auto* out = reinterpret_cast<uint64_t*>(w + 1);
  std::copy(words.begin(), words.end(), out);
  std::copy(pcs.begin(), pcs.end(), out + words.size());
  commit(r, len);
  return true;
}

TEST(ProbeRingReader, WalkedRecordsCarryTheirFieldsInBitOrder) {
  SharedArea a = small_area();
  RingReader reader(a);
  // An allocation defining its stack: value, ptr, stack id, then two pcs.
  ASSERT_TRUE(put_walked(a, PROBE_FIELD_VALUE | PROBE_FIELD_PTR | PROBE_FIELD_STACK_ID,
                         {48, 0x5000, 0xabc0}, {0x401000, 0x402000}));
  // A free: the old pointer alone.
  ASSERT_TRUE(put_walked(a, PROBE_FIELD_ARG0, {0x5000}, {}));
  // A wait: every field but ptr, no pcs (its id defined before).
  ASSERT_TRUE(
      put_walked(a, PROBE_FIELD_VALUE | PROBE_FIELD_ARG0 | PROBE_FIELD_ARG1 | PROBE_FIELD_STACK_ID,
                 {900, 0x7000, 555, 0xabc0}, {}));
  auto got = reader.drain_records();
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(reader.stats().corrupt, 0u);
  for (const ProbeRecord& r : got) {
    EXPECT_TRUE(r.walked);
    EXPECT_EQ(r.site, 3u);
    EXPECT_EQ(r.tid, 77);
    EXPECT_EQ(r.tsc, 12345u);
  }
  EXPECT_EQ(got[0].value, 48u);
  EXPECT_EQ(got[0].ptr, 0x5000u);
  EXPECT_EQ(got[0].args[0], 0u);
  EXPECT_EQ(got[0].stack_id, 0xabc0u);
  EXPECT_EQ(got[0].pcs, (std::vector<uint64_t>{0x401000, 0x402000}));
  EXPECT_EQ(got[1].value, 0u);
  EXPECT_EQ(got[1].ptr, 0u);
  EXPECT_EQ(got[1].args[0], 0x5000u);
  EXPECT_EQ(got[1].stack_id, 0u);
  EXPECT_TRUE(got[1].pcs.empty());
  EXPECT_EQ(got[2].value, 900u);
  EXPECT_EQ(got[2].ptr, 0u);
  EXPECT_EQ(got[2].args[0], 0x7000u);
  EXPECT_EQ(got[2].args[1], 555u);
  EXPECT_EQ(got[2].stack_id, 0xabc0u);
  EXPECT_TRUE(got[2].pcs.empty());
}

TEST(ProbeRingReader, MalformedWalkedRecordsResynchronize) {
  SharedArea a = small_area();
  RingReader reader(a);
  // A field bit past the last field.
  ASSERT_TRUE(put_walked(a, 0x20 | PROBE_FIELD_VALUE, {1, 2}, {}));
  EXPECT_TRUE(reader.drain_records().empty());
  EXPECT_EQ(reader.stats().corrupt, 1u);
  // More fields and pcs than the record's length holds.
  {
    const uint64_t len = sizeof(probe_record_walked) + 8;
    probe_record* r = reserve(a, len);
    auto* w = reinterpret_cast<probe_record_walked*>(r);
    w->flags = PROBE_REC_WALKED;
    w->pid = getpid();
    w->fields = PROBE_FIELD_VALUE | PROBE_FIELD_STACK_ID;
    w->npcs = 1;
    commit(r, len);
  }
  EXPECT_TRUE(reader.drain_records().empty());
  EXPECT_EQ(reader.stats().corrupt, 2u);
  // pcs without a stack id to name them.
  ASSERT_TRUE(put_walked(a, PROBE_FIELD_VALUE, {1}, {0x401000}));
  EXPECT_TRUE(reader.drain_records().empty());
  EXPECT_EQ(reader.stats().corrupt, 3u);
  // Slack after the words is allowed (len counts it), and the reader goes on.
  ASSERT_TRUE(put_walked(a, PROBE_FIELD_ARG0, {0x9000}, {}, 16));
  auto got = reader.drain_records();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].args[0], 0x9000u);
}

}  // namespace
}  // namespace profctl::probe
