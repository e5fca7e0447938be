// SPDX-License-Identifier: MIT
// profile/heap_profile: the heap tracker's arithmetic (exact at rate 1, Go's scaling above),
// the peak and its stacks, long-lived allocations and the counters.
#include "profile/heap_profile.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

namespace profctl {
namespace {

constexpr uint64_t kSec = 1'000'000'000;

using Values = std::vector<int64_t>;

// The row of `stack` in a profile, or empty values when there is none.
Values row(const ProfileData& p, StackId stack) {
  for (const auto& r : p.rows()) {
    if (r.stack == stack) {
      return r.values;
    }
  }
  return {};
}

TEST(HeapScale, MatchesGoScaleHeapSample) {
  // Golden values printed by Go 1.19's scaleHeapSample (src/runtime/pprof/protomem.go).
  EXPECT_EQ(scale_heap_sample(3, 300, 1024), std::make_pair(int64_t{32}, int64_t{3224}));
  EXPECT_EQ(scale_heap_sample(1, 4096, 1024), std::make_pair(int64_t{1}, int64_t{4172}));
  EXPECT_EQ(scale_heap_sample(1, 524288, 524288), std::make_pair(int64_t{1}, int64_t{829411}));
  EXPECT_EQ(scale_heap_sample(5, 5000000, 524288), std::make_pair(int64_t{5}, int64_t{5871808}));
  EXPECT_EQ(scale_heap_sample(2, 2, 524288), std::make_pair(int64_t{1048577}, int64_t{1048577}));
  EXPECT_EQ(scale_heap_sample(1, 100, 1024), std::make_pair(int64_t{10}, int64_t{1074}));
  EXPECT_EQ(scale_heap_sample(2, 200, 1024), std::make_pair(int64_t{21}, int64_t{2149}));
}

TEST(HeapScale, EdgeCases) {
  EXPECT_EQ(scale_heap_sample(0, 0, 1024), std::make_pair(int64_t{0}, int64_t{0}));
  EXPECT_EQ(scale_heap_sample(7, 700, 1), std::make_pair(int64_t{7}, int64_t{700}));
  EXPECT_EQ(scale_heap_sample(7, 700, 0), std::make_pair(int64_t{7}, int64_t{700}));
  // A zero-byte allocation keeps its count (Go would drop it; see the header).
  EXPECT_EQ(scale_heap_sample(4, 0, 1024), std::make_pair(int64_t{4}, int64_t{0}));
  // Saturates instead of overflowing.
  auto [n, b] = scale_heap_sample(INT64_MAX, INT64_MAX, 1u << 30);
  EXPECT_EQ(b, INT64_MAX);
  EXPECT_GT(n, 0);
}

TEST(HeapTracker, ExactAtRateOne) {
  HeapTracker t(1);
  t.on_alloc(0x1000, 100, 1, 10, 7);
  t.on_alloc(0x2000, 200, 1, 11, 7);
  t.on_alloc(0x3000, 50, 2, 12, 8);
  t.on_free(0x1000, 13);
  // realloc(0x2000, 300) moved to 0x4000, on another stack.
  t.on_free(0x2000, 14);
  t.on_alloc(0x4000, 300, 2, 14, 8);
  t.on_free(0x9000, 15);  // allocated before the attach
  t.on_free(0x1000, 16);  // freed twice: unknown the second time
  t.on_alloc(0x5000, 8, 3, 17, 9);
  t.on_free(0x5000, 18);

  const HeapResult r = t.result(20, kDefaultLeakAgeNs);
  ASSERT_EQ(r.profile.types().size(), 4u);
  EXPECT_EQ(r.profile.types()[0].type, "alloc_objects");
  EXPECT_EQ(r.profile.types()[1].type, "alloc_space");
  EXPECT_EQ(r.profile.types()[2].type, "inuse_objects");
  EXPECT_EQ(r.profile.types()[3].type, "inuse_space");
  EXPECT_EQ(r.profile.types()[3].unit, "bytes");
  EXPECT_EQ(r.profile.period_type().type, "space");
  EXPECT_EQ(r.profile.period_type().unit, "bytes");
  EXPECT_EQ(r.profile.period(), 1);
  EXPECT_EQ(r.profile.default_type, "inuse_space");

  ASSERT_EQ(r.profile.rows().size(), 3u);
  EXPECT_EQ(row(r.profile, 1), (Values{2, 300, 0, 0}));
  EXPECT_EQ(row(r.profile, 2), (Values{2, 350, 2, 350}));
  EXPECT_EQ(row(r.profile, 3), (Values{1, 8, 0, 0}));
  // At rate 1 the raw and the scaled numbers are the same.
  for (StackId s : {1u, 2u, 3u}) {
    EXPECT_EQ(row(r.raw, s), row(r.profile, s)) << "stack " << s;
  }
  EXPECT_EQ(r.counters.sampled_allocs, 5u);
  EXPECT_EQ(r.counters.sampled_frees, 3u);
  EXPECT_EQ(r.counters.unknown_frees, 2u);
  EXPECT_EQ(r.counters.missed_frees, 0u);
  EXPECT_EQ(r.counters.live_at_end, 2u);
  EXPECT_EQ(t.live_pointers(), 2u);
}

TEST(HeapTracker, ScalesEachSizeAsGoDoes) {
  HeapTracker t(1024);
  for (uint64_t p = 1; p <= 3; ++p) {
    t.on_alloc(p * 0x100, 100, 5, p, 1);
  }
  t.on_alloc(0x1000, 4096, 5, 4, 1);
  t.on_free(0x100, 5);
  const HeapResult r = t.result(6);
  EXPECT_EQ(r.profile.period(), 1024);
  // Buckets (5, 100 B) and (5, 4096 B) are scaled apart and summed into the stack's row:
  // alloc (3, 300) -> (32, 3224) plus (1, 4096) -> (1, 4172); in use (2, 200) -> (21, 2149)
  // plus (1, 4172).
  EXPECT_EQ(row(r.profile, 5), (Values{33, 3224 + 4172, 22, 2149 + 4172}));
  EXPECT_EQ(row(r.raw, 5), (Values{4, 300 + 4096, 3, 200 + 4096}));
  // And against the formula itself, independently of the golden values.
  const double s100 = 1 / (1 - std::exp(-100.0 / 1024));
  EXPECT_EQ(row(r.profile, 5)[0] - 1, static_cast<int64_t>(3 * s100));
}

TEST(HeapTracker, PeakStacksAreThoseAtTheMaximum) {
  HeapTracker t(1);
  t.set_start(1000);
  t.on_alloc(0xa, 1000, 1, 1100, 1);
  t.on_alloc(0xb, 500, 2, 1200, 1);  // 1500: the peak so far
  t.on_free(0xa, 1300);              // 500
  t.on_alloc(0xc, 800, 3, 1400, 1);  // 1300: below the peak
  HeapResult r = t.result(2000);
  EXPECT_EQ(r.peak.bytes, 1500);
  EXPECT_EQ(r.peak.objects, 2);
  EXPECT_EQ(r.peak.raw_bytes, 1500);
  EXPECT_EQ(r.peak.at_ns, 200u);
  ASSERT_EQ(r.peak.stacks.size(), 2u);
  EXPECT_EQ(r.peak.stacks[0].stack, 1u);  // largest first
  EXPECT_EQ(r.peak.stacks[0].bytes, 1000);
  EXPECT_EQ(r.peak.stacks[1].stack, 2u);
  EXPECT_EQ(r.peak.stacks[1].bytes, 500);

  t.on_alloc(0xd, 2000, 3, 1500, 1);  // 3300: a new peak, stacks 2 and 3
  r = t.result(2000);
  EXPECT_EQ(r.peak.bytes, 3300);
  EXPECT_EQ(r.peak.at_ns, 500u);
  ASSERT_EQ(r.peak.stacks.size(), 2u);
  EXPECT_EQ(r.peak.stacks[0].stack, 3u);
  EXPECT_EQ(r.peak.stacks[0].bytes, 2800);
  EXPECT_EQ(r.peak.stacks[0].objects, 2);
  EXPECT_EQ(r.peak.stacks[1].stack, 2u);
}

TEST(HeapTracker, PeakSurvivesLongChurnAfterIt) {
  // More changes after the peak than the journal holds: the peak state is materialized
  // once and must still be exact.
  HeapTracker t(1);
  for (uint64_t i = 0; i < 10; ++i) {
    t.on_alloc(0x1000 + i, 4096, 1, i, 1);
  }
  t.on_alloc(0x9000, 1024, 2, 10, 1);  // peak: 10 x 4096 + 1024
  for (uint64_t i = 0; i < 10; ++i) {
    t.on_free(0x1000 + i, 11);
  }
  for (uint64_t i = 0; i < 200'000; ++i) {
    t.on_alloc(0x100000 + i, 16, 3 + (i % 7), 12 + i, 2);
    t.on_free(0x100000 + i, 12 + i);
  }
  const HeapResult r = t.result(1'000'000);
  EXPECT_EQ(r.peak.bytes, 10 * 4096 + 1024);
  ASSERT_EQ(r.peak.stacks.size(), 2u);
  EXPECT_EQ(r.peak.stacks[0].stack, 1u);
  EXPECT_EQ(r.peak.stacks[0].objects, 10);
  EXPECT_EQ(r.peak.stacks[1].stack, 2u);
  EXPECT_EQ(r.peak.at_ns, 10u);
  // And a new peak after the churn replaces it.
  t.on_alloc(0x9001, 1 << 20, 4, 300'000, 1);
  const HeapResult r2 = t.result(1'000'000);
  EXPECT_EQ(r2.peak.bytes, 1024 + (1 << 20));
  ASSERT_EQ(r2.peak.stacks.size(), 2u);
  EXPECT_EQ(r2.peak.stacks[0].stack, 4u);
}

// Against a brute force that copies the whole state at every new maximum: random churn long
// enough after each peak that the tracker's journal overflows and the peak state is
// materialized, then a new peak that must replace it.
TEST(HeapTracker, PeakMatchesBruteForceOnRandomChurn) {
  constexpr uint64_t kRate = 4096;
  HeapTracker t(kRate);
  std::mt19937_64 rng(42);
  std::map<std::pair<StackId, uint64_t>, uint64_t> live_counts;  // (stack, size) -> live
  std::vector<std::tuple<uint64_t, StackId, uint64_t>> live;     // ptr, stack, size
  int64_t running = 0, best = 0;
  uint64_t best_time = 0;
  std::map<std::pair<StackId, uint64_t>, uint64_t> at_best;
  uint64_t next_ptr = 0x1000;
  for (uint64_t i = 1; i <= 400'000; ++i) {
    // Cycles of 150k records: 30k that grow (a new peak each time), then 120k that shrink
    // slowly, longer than the journal's 65536 changes.
    const uint64_t grow = i % 150'000 < 30'000 ? 600 : 480;
    const bool alloc = live.empty() || rng() % 1000 < grow;
    if (alloc) {
      const StackId stack = static_cast<StackId>(rng() % 40);
      const uint64_t size = 64 << (rng() % 6);
      t.on_alloc(next_ptr, size, stack, i, 1);
      live.emplace_back(next_ptr, stack, size);
      next_ptr += 16;
      ++live_counts[{stack, size}];
      running += scale_heap_sample(1, static_cast<int64_t>(size), kRate).second;
    } else {
      const size_t k = rng() % live.size();
      const auto [ptr, stack, size] = live[k];
      t.on_free(ptr, i);
      live[k] = live.back();
      live.pop_back();
      --live_counts[{stack, size}];
      running -= scale_heap_sample(1, static_cast<int64_t>(size), kRate).second;
    }
    if (running > best) {
      best = running;
      best_time = i;
      at_best = live_counts;
    }
  }
  std::map<StackId, std::pair<int64_t, int64_t>> expected;  // stack -> (objects, bytes)
  for (const auto& [key, n] : at_best) {
    if (n > 0) {
      auto [o, b] =
          scale_heap_sample(static_cast<int64_t>(n), static_cast<int64_t>(n * key.second), kRate);
      expected[key.first].first += o;
      expected[key.first].second += b;
    }
  }
  const HeapResult r = t.result(400'001);
  EXPECT_EQ(r.peak.at_ns, best_time - 1);  // since the first record, at time 1
  ASSERT_EQ(r.peak.stacks.size(), expected.size());
  for (const HeapStackUse& s : r.peak.stacks) {
    EXPECT_EQ(s.objects, expected[s.stack].first) << "stack " << s.stack;
    EXPECT_EQ(s.bytes, expected[s.stack].second) << "stack " << s.stack;
  }
}

TEST(HeapTracker, PeakIsScaledAboveRateOne) {
  HeapTracker t(524288);
  t.on_alloc(0x10, 524288, 1, 0, 1);
  const HeapResult r = t.result(1);
  EXPECT_EQ(r.peak.bytes, 829411);
  EXPECT_EQ(r.peak.raw_bytes, 524288);
  EXPECT_EQ(r.peak.objects, 1);
}

TEST(HeapTracker, LongLivedByAge) {
  HeapTracker t(1);
  t.set_start(0);
  t.on_alloc(0x1, 100, 1, 1 * kSec, 11);
  t.on_alloc(0x2, 100, 1, 2 * kSec, 12);
  t.on_alloc(0x3, 4000, 2, 8 * kSec, 13);
  t.on_alloc(0x4, 100, 1, 9 * kSec + kSec / 2, 14);  // 2.5 s old at the end: too young
  t.on_alloc(0x5, 100, 1, 0, 15);                    // the oldest, but freed
  t.on_free(0x5, 3 * kSec);
  const HeapResult r = t.result(12 * kSec, 3 * kSec);
  EXPECT_EQ(r.leaks.min_age_ns, 3 * kSec);
  EXPECT_EQ(r.leaks.raw_objects, 3);
  EXPECT_EQ(r.leaks.raw_bytes, 4200);
  ASSERT_EQ(r.leaks.stacks.size(), 2u);
  EXPECT_EQ(r.leaks.stacks[0].stack, 2u);  // most bytes first
  EXPECT_EQ(r.leaks.stacks[0].raw_objects, 1);
  EXPECT_EQ(r.leaks.stacks[0].oldest_age_ns, 4 * kSec);
  EXPECT_EQ(r.leaks.stacks[0].oldest_tid, 13);
  EXPECT_EQ(r.leaks.stacks[1].stack, 1u);
  EXPECT_EQ(r.leaks.stacks[1].raw_objects, 2);
  EXPECT_EQ(r.leaks.stacks[1].bytes, 200);
  EXPECT_EQ(r.leaks.stacks[1].oldest_age_ns, 11 * kSec);
  EXPECT_EQ(r.leaks.stacks[1].oldest_tid, 11);
  // Nothing is old enough for a longer age.
  EXPECT_TRUE(t.result(12 * kSec, 60 * kSec).leaks.stacks.empty());
}

TEST(HeapTracker, AReusedLivePointerMeansAMissedFree) {
  HeapTracker t(1);
  t.on_alloc(0x10, 64, 1, 1, 1);
  t.on_alloc(0x10, 32, 2, 2, 1);  // the free of the first was lost
  const HeapResult r = t.result(3);
  EXPECT_EQ(r.counters.missed_frees, 1u);
  EXPECT_EQ(r.counters.live_at_end, 1u);
  EXPECT_EQ(row(r.profile, 1), (Values{1, 64, 0, 0}));
  EXPECT_EQ(row(r.profile, 2), (Values{1, 32, 1, 32}));
}

TEST(HeapTracker, DropsAreCountedAndNullIgnored) {
  HeapTracker t(512);
  t.note_dropped(5);
  t.note_dropped(2);
  t.note_table_dropped(3);
  t.note_queue_dropped(4);
  t.note_frees_dropped(6);
  t.on_alloc(0, 100, 1, 1, 1);  // a failed allocation
  const HeapResult r = t.result(2);
  EXPECT_EQ(r.counters.ring_dropped, 7u);  // the ring's drops only: the queue's are apart
  EXPECT_EQ(r.counters.queue_dropped, 4u);
  EXPECT_EQ(r.counters.table_dropped, 3u);
  EXPECT_EQ(r.counters.frees_dropped, 6u);
  EXPECT_EQ(r.counters.sampled_allocs, 0u);
  // The allocations lost: untracked pointers and lost frees were recorded allocations.
  EXPECT_EQ(r.profile.dropped, 11u);
  EXPECT_TRUE(r.profile.rows().empty());
  EXPECT_EQ(r.peak.bytes, 0);
  EXPECT_TRUE(r.peak.stacks.empty());
}

TEST(HeapTracker, HugeSizesSaturate) {
  HeapTracker t(1);
  t.on_alloc(0x1, UINT64_MAX, 1, 1, 1);
  t.on_alloc(0x2, UINT64_MAX, 1, 1, 1);
  const HeapResult r = t.result(2);
  EXPECT_EQ(row(r.profile, 1), (Values{2, INT64_MAX, 2, INT64_MAX}));
  EXPECT_EQ(r.peak.bytes, INT64_MAX);
}

}  // namespace
}  // namespace profctl
