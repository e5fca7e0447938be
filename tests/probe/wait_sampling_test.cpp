// SPDX-License-Identifier: MIT
// The wait profiles' sampling is decided in the target (probe/blob/blob.c, enter_wait and
// probe_wait_exit), in this very process: its own libc's __lll_lock_wait_private and
// __lll_lock_wake_private are probed (LibcProbes) and called as glibc's lock protocol calls
// them. What must hold, with the real blob:
//  - --mutex-fraction N: 1 in N lock waits recorded, drawn at random (no residue of the
//    call index is favoured), and only those; a wait not chosen is not even timed;
//  - a lock's release is recorded exactly when a chosen wait waits on that lock (the holder
//    side's only candidates), so a high fraction records few releases too;
//  - --block-rate: Go's rule drawn at the wait's end, so the weights profctl applies
//    (rate/delay below the rate, 1 above) estimate the number of waits without bias.
// Each test runs in its own process (gtest_discover_tests): a failure cannot leave libc
// patched.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#include "probe/abi/probe_abi.h"
#include "probe/ring_reader.h"
#include "tests/probe/libc_probes.h"

namespace profctl::probe {
namespace {

using testing::LibcProbes;
using testing::LibcSite;

using LockFn = void (*)(int*);

struct LockFns {
  LockFn wait = nullptr;  // __lll_lock_wait_private: the contended slow path of a lock
  LockFn wake = nullptr;  // __lll_lock_wake_private: the release of a contended lock
};

LockFns lock_fns() {
  LockFns f;
  f.wait =
      reinterpret_cast<LockFn>(dlvsym(RTLD_DEFAULT, "__lll_lock_wait_private", "GLIBC_PRIVATE"));
  f.wake =
      reinterpret_cast<LockFn>(dlvsym(RTLD_DEFAULT, "__lll_lock_wake_private", "GLIBC_PRIVATE"));
  return f;
}

SharedAreaOptions wait_options(uint64_t fraction, uint64_t block_rate_ticks) {
  SharedAreaOptions o;
  o.mem_rate = 0;
  o.mutex_fraction = fraction;
  o.block_rate_ticks = block_rate_ticks;
  o.stack_bytes = 512;
  o.ring_bytes = 16 << 20;
  o.pointer_capacity = 1 << 10;
  o.prefault = false;
  o.owner_pid = getpid();
  return o;
}

std::unique_ptr<LibcProbes> install_lock_probes(const SharedAreaOptions& o) {
  const std::vector<LibcSite> sites = {{"__lll_lock_wait_private", PROBE_KIND_MUTEX},
                                       {"__lll_lock_wake_private", PROBE_KIND_MUTEX_WAKE}};
  auto p = LibcProbes::install(sites, o);
  EXPECT_TRUE(p) << (p ? "" : p.error().message());
  if (!p) {
    return nullptr;
  }
  (*p)->area().set_enabled(true);
  return std::move(*p);
}

#define REQUIRE_LOCK_FNS(f)                                              \
  if ((f).wait == nullptr || (f).wake == nullptr) {                      \
    GTEST_SKIP() << "this libc exports no __lll_lock_wait/wake_private"; \
  }

// Records of the lock words in [lo, hi), by kind.
struct Drained {
  std::vector<ProbeRecord> waits;
  std::vector<ProbeRecord> wakes;
};

Drained drain(LibcProbes& p, uint64_t lo, uint64_t hi) {
  RingReader reader(p.area());
  Drained d;
  for (ProbeRecord& r : reader.drain_records()) {
    if (r.args[0] < lo || r.args[0] >= hi) {
      continue;  // a lock of libc's own
    }
    (r.kind == PROBE_KIND_MUTEX_WAKE ? d.wakes : d.waits).push_back(std::move(r));
  }
  return d;
}

// 4.5 standard deviations of a binomial count: a correct sampler fails ~1 run in 150,000.
double slack(double n, double p) { return 4.5 * std::sqrt(n * p * (1 - p)); }

TEST(ProbeWaitSampling, MutexFractionRecordsOneInNAtRandom) {
  const LockFns f = lock_fns();
  REQUIRE_LOCK_FNS(f);
  constexpr int kWaits = 20000;
  constexpr uint64_t kFraction = 10;
  auto probes = install_lock_probes(wait_options(kFraction, 0));
  ASSERT_TRUE(probes);
  // One lock word per call: a record's lock says which call it was. Each word is free, so
  // the slow path takes it at once (its exchange reads 0): a wait of a few ns.
  std::vector<int> locks(kWaits, 0);
  for (int& l : locks) {
    f.wait(&l);
  }
  probes->remove();
  const uint64_t lo = reinterpret_cast<uint64_t>(locks.data());
  const Drained d = drain(*probes, lo, lo + sizeof(int) * kWaits);
  const probe_counters& k = reinterpret_cast<const probe_ctl*>(probes->area().data())->counters;
  EXPECT_EQ(k.dropped_ring_full, 0u);
  EXPECT_GE(k.waits_seen, static_cast<uint64_t>(kWaits));

  const double p = 1.0 / kFraction;
  EXPECT_NEAR(static_cast<double>(d.waits.size()), kWaits * p, slack(kWaits, p));
  // At random, not every Nth call: each residue of the call index mod N gets its share.
  std::vector<int> by_residue(kFraction, 0);
  for (const ProbeRecord& r : d.waits) {
    EXPECT_EQ(r.flags & (PROBE_REC_WAIT_MUTEX | PROBE_REC_WAIT_BLOCK), PROBE_REC_WAIT_MUTEX);
    EXPECT_EQ(r.args[3], kFraction);  // the weight profctl applies, from the record
    ++by_residue[(r.args[0] - lo) / sizeof(int) % kFraction];
  }
  const double per_residue = static_cast<double>(kWaits) / kFraction;
  for (uint64_t i = 0; i < kFraction; ++i) {
    EXPECT_NEAR(by_residue[i], per_residue * p, slack(per_residue, p)) << "residue " << i;
  }
  EXPECT_TRUE(d.wakes.empty());
}

// glibc's protocol on one lock word, round after round: the waiter enters the slow path
// of a held lock (1), which sets it to 2 and sleeps; the holder sees 2, releases (0) and,
// as pthread_mutex_unlock does for a lock it found at 2, wakes it. Each round is one wait
// and one release that happens while that wait waits.
void run_rounds(const LockFns& f, int rounds, int& lock) {
  std::atomic<int> round{0};
  std::thread holder([&] {
    for (int i = 0; i < rounds; ++i) {
      while (round.load() != i + 1 || __atomic_load_n(&lock, __ATOMIC_ACQUIRE) != 2) {
        std::this_thread::yield();
      }
      if (__atomic_exchange_n(&lock, 0, __ATOMIC_RELEASE) > 1) {
        f.wake(&lock);
      }
    }
  });
  for (int i = 0; i < rounds; ++i) {
    __atomic_store_n(&lock, 1, __ATOMIC_RELEASE);  // held by the holder
    round.store(i + 1);
    f.wait(&lock);  // returns holding it (2)
  }
  holder.join();
}

void releases_follow_chosen_waits(uint64_t fraction, int rounds) {
  const LockFns f = lock_fns();
  if (f.wait == nullptr || f.wake == nullptr) {
    GTEST_SKIP() << "this libc exports no __lll_lock_wait/wake_private";
  }
  auto probes = install_lock_probes(wait_options(fraction, 0));
  ASSERT_TRUE(probes);
  int lock = 0;
  run_rounds(f, rounds, lock);
  probes->remove();
  const uint64_t at = reinterpret_cast<uint64_t>(&lock);
  Drained d = drain(*probes, at, at + sizeof lock);
  const probe_counters& k = reinterpret_cast<const probe_ctl*>(probes->area().data())->counters;
  EXPECT_EQ(k.dropped_ring_full, 0u);

  const double p = 1.0 / static_cast<double>(fraction);
  EXPECT_NEAR(static_cast<double>(d.waits.size()), rounds * p, slack(rounds, p));
  // The releases that happened during a recorded wait: one per recorded wait, inside it (a
  // release starts after its wait began and before it ended). One can be missed: when the
  // waiter takes the lock between the holder's exchange and its wake call (it had not gone
  // to sleep yet), its wait ends before the wake looks at the filter. That wake has nobody
  // to wake either; it is rare (a few in a thousand rounds).
  ASSERT_LE(d.wakes.size(), d.waits.size());
  ASSERT_GE(d.wakes.size() * 100, d.waits.size() * 98);
  // Which wait a release went with cannot be told from the times alone: the waiter may take
  // the lock the instant the holder lets go, return, and enter the next round's wait before
  // the holder enters the wake (whose start stamp is then after the next wait began), and a
  // wait stamps its end before it lowers its filter counter. The counts above say that only
  // chosen waits had their releases recorded (at fraction N, a release recorded for every
  // round would outnumber the chosen waits N times); the times say no release was recorded
  // before a recorded wait began.
  uint64_t first_wait = UINT64_MAX;
  for (const ProbeRecord& wait : d.waits) {
    first_wait = std::min(first_wait, wait.args[1]);
  }
  for (const ProbeRecord& wake : d.wakes) {
    EXPECT_EQ(wake.flags & PROBE_REC_WAKE, PROBE_REC_WAKE);
    EXPECT_GT(wake.args[1], first_wait) << "a release recorded before any recorded wait began";
  }
  // Every counter the chosen waits raised is down again.
  const auto* c = reinterpret_cast<const probe_ctl*>(probes->area().data());
  const auto* filter =
      reinterpret_cast<const uint32_t*>(probes->area().data() + c->lock_filter_offset);
  for (uint64_t i = 0; i < c->lock_filter_capacity; ++i) {
    ASSERT_EQ(filter[i], 0u) << "lock filter counter " << i;
  }
}

TEST(ProbeWaitSampling, ReleasesAreRecordedOnlyForChosenWaits) {
  releases_follow_chosen_waits(10, 3000);
}

TEST(ProbeWaitSampling, AtFractionOneEveryWaitAndItsReleaseAreRecorded) {
  releases_follow_chosen_waits(1, 500);
}

// Go's block rule: a wait of d ticks < rate is kept with probability d/rate and stands for
// rate/d waits; so the kept waits' weights add up to the number of waits, whatever their
// lengths. The waits here last tens to hundreds of ns against a rate of 20,000 ticks.
TEST(ProbeWaitSampling, BlockRateWeightsEstimateTheWaitsWithoutBias) {
  const LockFns f = lock_fns();
  REQUIRE_LOCK_FNS(f);
  constexpr int kWaits = 100000;
  constexpr uint64_t kRate = 20000;
  auto probes = install_lock_probes(wait_options(0, kRate));
  ASSERT_TRUE(probes);
  int lock = 0;
  for (int i = 0; i < kWaits; ++i) {
    __atomic_store_n(&lock, 0, __ATOMIC_RELAXED);
    f.wait(&lock);
  }
  probes->remove();
  const uint64_t at = reinterpret_cast<uint64_t>(&lock);
  const Drained d = drain(*probes, at, at + sizeof lock);
  const probe_counters& k = reinterpret_cast<const probe_ctl*>(probes->area().data())->counters;
  EXPECT_EQ(k.dropped_ring_full, 0u);
  EXPECT_GE(k.waits_seen, static_cast<uint64_t>(kWaits));  // every wait timed
  ASSERT_GT(d.waits.size(), 0u);
  ASSERT_LT(d.waits.size(), static_cast<size_t>(kWaits / 4));  // most short waits not kept
  double estimate = 0;
  double variance = 0;  // of the estimate: sum over all waits of (w - 1), estimated as below
  for (const ProbeRecord& r : d.waits) {
    EXPECT_EQ(r.flags & (PROBE_REC_WAIT_MUTEX | PROBE_REC_WAIT_BLOCK), PROBE_REC_WAIT_BLOCK);
    EXPECT_EQ(r.args[2], kRate);
    const double w =
        r.value >= kRate ? 1.0 : static_cast<double>(kRate) / std::max<uint64_t>(r.value, 1);
    estimate += w;
    variance += w * (w - 1);
  }
  EXPECT_NEAR(estimate, kWaits, 4.5 * std::sqrt(variance) + 1)
      << d.waits.size() << " waits kept of " << kWaits;
}

}  // namespace
}  // namespace profctl::probe
