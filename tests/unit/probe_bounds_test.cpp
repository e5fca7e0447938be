// SPDX-License-Identifier: MIT
// The probe collectors' memory bounds (profile/): the records they are fed come from memory
// a hostile target writes, so every structure that grows with the records is bounded, and
// a bound reached is counted and said. A fake unwinder turns each snapshot's first stack
// word into a frame, so that the test decides how many distinct stacks there are; a gated
// one holds the worker so that the queue fills.
#include <gtest/gtest.h>

#include <condition_variable>
#include <cstring>
#include <mutex>

#include "profile/heap_collector.h"
#include "profile/heap_profile.h"
#include "profile/stack_table.h"
#include "profile/wait_collector.h"

namespace profctl {
namespace {

// Frames from the stack copy: its first word, then `depth` more frames after it.
class WordUnwinder : public Unwinder {
 public:
  explicit WordUnwinder(size_t depth = 4) : depth_(depth) {}
  UnwindResult unwind(const Snapshot& snap) override {
    UnwindResult r;
    uint64_t word = 0;
    if (snap.stack_size >= sizeof word) {
      std::memcpy(&word, snap.stack_bytes.get(), sizeof word);
    }
    for (size_t i = 0; i <= depth_; ++i) {
      r.frames.push_back(UnwoundFrame{word + i, i == 0});
    }
    return r;
  }

 private:
  size_t depth_;
};

// A WordUnwinder that waits for open() before its first unwind.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  bool is_open = false;
  void open() {
    {
      std::lock_guard lock(mu);
      is_open = true;
    }
    cv.notify_all();
  }
  void wait() {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return is_open; });
  }
};
class GatedUnwinder : public WordUnwinder {
 public:
  explicit GatedUnwinder(Gate& g) : gate_(g) {}
  UnwindResult unwind(const Snapshot& snap) override {
    gate_.wait();
    return WordUnwinder::unwind(snap);
  }

 private:
  Gate& gate_;
};

Snapshot snapshot(uint64_t word, size_t stack_size) {
  Snapshot s;
  s.stack_size = std::max(stack_size, sizeof word);
  s.stack_bytes = std::make_unique<std::byte[]>(s.stack_size);
  std::memcpy(s.stack_bytes.get(), &word, sizeof word);
  return s;
}

AllocEvent alloc(uint64_t ptr, uint64_t size, uint64_t word, size_t stack_size) {
  AllocEvent e;
  e.kind = AllocEvent::Kind::kAlloc;
  e.ptr = ptr;
  e.size = size;
  e.snap = std::make_unique<Snapshot>(snapshot(word, stack_size));
  return e;
}

TEST(ProbeBounds, StackTableKeepsAtMostItsFrames) {
  StackTable t(100);
  std::vector<UnwoundFrame> frames(10);
  for (uint64_t s = 0; s < 20; ++s) {
    for (size_t i = 0; i < frames.size(); ++i) {
      frames[i].pc = 0x1000 * (s + 1) + i;
    }
    t.intern(frames);
  }
  // 10 stacks of 10 frames fit; the other 10 became the empty stack.
  EXPECT_EQ(t.size(), 11u);
  EXPECT_EQ(t.capped(), 10u);
  const StackId empty = t.intern({});
  EXPECT_TRUE(t.get(empty).empty());
  // A stack already kept is still found.
  for (size_t i = 0; i < frames.size(); ++i) {
    frames[i].pc = 0x1000 + i;
  }
  EXPECT_EQ(t.intern(frames), 0u);
  EXPECT_EQ(t.capped(), 10u);
}

TEST(ProbeBounds, HeapTrackerKeepsAtMostItsLivePointersAndBuckets) {
  HeapTracker live_bound(1, HeapTrackerLimits{.max_live = 100, .max_buckets = 1000});
  for (uint64_t i = 0; i < 1000; ++i) {
    live_bound.on_alloc(0x1000 + i * 16, 32, 1, i, 1);
  }
  EXPECT_EQ(live_bound.live_pointers(), 100u);
  EXPECT_EQ(live_bound.counters().capped, 900u);
  EXPECT_EQ(live_bound.counters().sampled_allocs, 100u);
  live_bound.on_free(0x1000, 2000);  // room again for one
  live_bound.on_alloc(0x999000, 32, 1, 2001, 1);
  EXPECT_EQ(live_bound.live_pointers(), 100u);
  EXPECT_EQ(live_bound.counters().capped, 900u);

  HeapTracker bucket_bound(1, HeapTrackerLimits{.max_live = 100000, .max_buckets = 10});
  for (uint64_t i = 0; i < 1000; ++i) {
    bucket_bound.on_alloc(0x1000 + i * 16, 8 + i, 1, i, 1);  // a new size: a new bucket
    bucket_bound.on_free(0x1000 + i * 16, i);
  }
  EXPECT_EQ(bucket_bound.buckets(), 10u);
  EXPECT_EQ(bucket_bound.counters().capped, 990u);
  // An allocation of a size already bucketed is still counted.
  bucket_bound.on_alloc(0x5000000, 8, 1, 5000, 1);
  EXPECT_EQ(bucket_bound.counters().capped, 990u);
  EXPECT_EQ(bucket_bound.live_pointers(), 1u);
}

TEST(ProbeBounds, HeapCollectorQueueIsBoundedInStackBytes) {
  Gate gate;
  HeapLimits limits;
  limits.max_queued_bytes = 1 << 20;  // 16 of the 64 KiB stacks below
  HeapCollector c([&gate] { return std::make_unique<GatedUnwinder>(gate); }, 1, limits);
  // 2,000 x 64 KiB = 125 MiB if the queue took them all.
  for (uint64_t i = 0; i < 2000; ++i) {
    c.push(alloc(0x1000 + i * 16, 64, 0x400000, 64 << 10));
  }
  gate.open();
  c.finish();
  EXPECT_LE(c.stats().max_queued_bytes, size_t{1} << 20);
  EXPECT_GE(c.stats().dropped, 2000u - 17);
  EXPECT_EQ(c.stats().dropped + c.stats().unwound, 2000u);
  // Every one an allocation: the heap profile's loss (capture/ states it, not a note here).
  EXPECT_EQ(c.stats().allocs_dropped, c.stats().dropped);
  EXPECT_EQ(c.stats().frees_dropped, 0u);
  EXPECT_EQ(c.tracker().counters().queue_dropped, c.stats().dropped);
  EXPECT_TRUE(c.notes().empty());
}

TEST(ProbeBounds, HeapCollectorStacksAreBounded) {
  HeapLimits limits;
  limits.max_stack_frames = 50;  // 10 stacks of 5 frames
  HeapCollector c([] { return std::make_unique<WordUnwinder>(4); }, 1, limits);
  for (uint64_t i = 0; i < 100; ++i) {
    c.push(alloc(0x1000 + i * 16, 64, 0x400000 + i * 0x100, 64));  // 100 distinct stacks
  }
  c.finish();
  EXPECT_EQ(c.stacks().size(), 11u);  // 10 kept and the empty one
  EXPECT_EQ(c.stacks().capped(), 90u);
  EXPECT_EQ(c.tracker().counters().sampled_allocs, 100u);  // still counted, on the empty stack
  bool said = false;
  for (const auto& n : c.notes()) {
    said = said || n.find("stacks were not kept") != std::string::npos;
  }
  EXPECT_TRUE(said);
}

WaitEvent wait_event(uint64_t lock, uint64_t word, bool wake = false) {
  WaitEvent e;
  e.mutex = !wake;
  e.block = !wake;
  e.lock_wait = true;
  e.wake = wake;
  e.delay_ns = 1000;
  e.start_ns = 10;
  e.end_ns = 1010;
  e.lock = lock;
  e.snap = std::make_unique<Snapshot>(snapshot(word, 64));
  return e;
}

TEST(ProbeBounds, WaitCollectorKeysAndTimedWaitsAreBounded) {
  WaitLimits limits;
  limits.max_keys = 10;
  limits.max_timed = 20;
  WaitCollector c([] { return std::make_unique<WordUnwinder>(2); }, nullptr, 1, 1, limits);
  for (uint64_t i = 0; i < 100; ++i) {
    c.push(wait_event(0x7000 + i * 8, 0x400000));  // one stack, 100 distinct locks
  }
  for (uint64_t i = 0; i < 100; ++i) {
    c.push(wait_event(0x7000, 0x400000, /*wake=*/true));
  }
  c.finish();
  EXPECT_EQ(c.block().rows().size(), 10u);
  EXPECT_EQ(c.mutex().rows().size(), 10u);
  EXPECT_EQ(c.stats().block_events, 10u);
  EXPECT_EQ(c.stats().wakes, 20u);
  EXPECT_EQ(c.stats().capped, 90u + 80u);
  ASSERT_FALSE(c.notes().empty());
  EXPECT_NE(c.notes()[0].find("waits were not counted"), std::string::npos);
}

TEST(ProbeBounds, WaitCollectorQueueIsBoundedInStackBytes) {
  Gate gate;
  WaitLimits limits;
  limits.max_queued_bytes = 1 << 20;
  WaitCollector c([&gate] { return std::make_unique<GatedUnwinder>(gate); }, nullptr, 1, 1, limits);
  for (uint64_t i = 0; i < 2000; ++i) {
    WaitEvent e = wait_event(0x7000, 0x400000);
    e.snap = std::make_unique<Snapshot>(snapshot(0x400000, 64 << 10));
    c.push(std::move(e));
  }
  gate.open();
  c.finish();
  EXPECT_LE(c.stats().max_queued_bytes, size_t{1} << 20);
  EXPECT_GE(c.stats().dropped, 2000u - 17);
  // Each a lock's slow path chosen for both: each profile lost every one of them.
  EXPECT_EQ(c.stats().block_dropped, c.stats().dropped);
  EXPECT_EQ(c.stats().mutex_dropped, c.stats().dropped);
  EXPECT_EQ(c.block().dropped, c.stats().dropped);
  EXPECT_EQ(c.mutex().dropped, c.stats().dropped);
  EXPECT_EQ(c.mutex_holders().dropped, c.stats().dropped);
}

}  // namespace
}  // namespace profctl
