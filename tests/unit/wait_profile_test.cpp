// SPDX-License-Identifier: MIT
// The block and mutex profiles' arithmetic (Go's scaling), their collector's routing (lock
// waits, rwlock waits by stack, the lock label) with a fake unwinder, and the options'
// parsing.
#include <gtest/gtest.h>

#include <map>

#include "base/user_error.h"
#include "cli/wait_options.h"
#include "profile/wait_collector.h"

namespace profctl {
namespace {

TEST(WaitScaling, BlockEventsShorterThanTheRateStandForRateOverDelayWaits) {
  // Go's saveblockevent: kept with probability delay/rate, so it counts rate/delay times
  // and rate ns.
  auto [count, delay] = scale_block_event(2'500, 10'000);
  EXPECT_DOUBLE_EQ(count, 4.0);
  EXPECT_DOUBLE_EQ(delay, 10'000.0);
  auto [c2, d2] = scale_block_event(25'000, 10'000);
  EXPECT_DOUBLE_EQ(c2, 1.0);
  EXPECT_DOUBLE_EQ(d2, 25'000.0);
  auto [c3, d3] = scale_block_event(7, 1);  // rate 1: every wait as it was
  EXPECT_DOUBLE_EQ(c3, 1.0);
  EXPECT_DOUBLE_EQ(d3, 7.0);
  auto [c4, d4] = scale_block_event(0, 1000);  // a zero delay never divides by zero
  EXPECT_DOUBLE_EQ(c4, 1000.0);
  EXPECT_DOUBLE_EQ(d4, 1000.0);
}

// The stack is the snapshot's rip (the wait function) then rsp (its caller), so a test
// chooses the caller by rsp.
class TwoFrameUnwinder : public Unwinder {
 public:
  UnwindResult unwind(const Snapshot& s) override {
    return {{{s.regs.rip, true}, {s.regs.rsp, false}}, false, {}};
  }
};

WaitEvent wait_event(bool lock_wait, uint64_t caller, uint64_t delay_ns, uint64_t lock, bool mutex,
                     bool block) {
  WaitEvent e;
  e.mutex = mutex;
  e.block = block;
  e.lock_wait = lock_wait;
  e.delay_ns = delay_ns;
  e.lock = lock;
  Snapshot s;
  s.regs.rip = 0x1000;
  s.regs.rsp = caller;
  e.snap = std::make_unique<Snapshot>(std::move(s));
  return e;
}

std::map<std::string, std::vector<int64_t>> rows_by_lock(const ProfileData& p) {
  std::map<std::string, std::vector<int64_t>> out;
  for (const auto& r : p.rows()) {
    auto& v = out[r.labels.at("lock")];
    v.resize(2, 0);
    v[0] += r.values[0];
    v[1] += r.values[1];
  }
  return out;
}

TEST(WaitCollector, RoutesLockWaitsRwlockWaitsAndScales) {
  constexpr uint64_t kRwlockPc = 0x5000;  // "inside pthread_rwlock_wrlock"
  WaitCollector c([] { return std::make_unique<TwoFrameUnwinder>(); },
                  [](uint64_t pc) { return pc == kRwlockPc; }, /*block_rate_ns=*/1000,
                  /*mutex_fraction=*/4);
  // A contended mutex: both profiles.
  c.push(wait_event(true, 0x2000, 5000, 0xa0, true, true));
  // A condition wait: block only, even when the fraction chose it.
  c.push(wait_event(false, 0x3000, 8000, 0xb0, true, true));
  // An rwlock's futex wait (generic, but under pthread_rwlock_*): a lock wait too.
  c.push(wait_event(false, kRwlockPc, 3000, 0xc0, true, true));
  // A short wait the block rate kept: stands for rate/delay = 4 waits of 1000 ns.
  c.push(wait_event(false, 0x3000, 250, 0xd0, false, true));
  c.finish();

  auto block = rows_by_lock(c.block());
  EXPECT_EQ(block.at("0xa0"), (std::vector<int64_t>{1, 5000}));
  EXPECT_EQ(block.at("0xb0"), (std::vector<int64_t>{1, 8000}));
  EXPECT_EQ(block.at("0xc0"), (std::vector<int64_t>{1, 3000}));
  EXPECT_EQ(block.at("0xd0"), (std::vector<int64_t>{4, 1000}));
  // The mutex profile: 1 in 4 recorded, so every value is scaled by 4.
  auto mutex = rows_by_lock(c.mutex());
  ASSERT_EQ(mutex.size(), 2u);
  EXPECT_EQ(mutex.at("0xa0"), (std::vector<int64_t>{4, 20000}));
  EXPECT_EQ(mutex.at("0xc0"), (std::vector<int64_t>{4, 12000}));
  EXPECT_EQ(c.stats().mutex_events, 2u);
  EXPECT_EQ(c.stats().block_events, 4u);
  EXPECT_EQ(c.mutex().types()[1].unit, "nanoseconds");
}

TEST(WaitCollector, ChargesEachMutexWaitToTheReleaseThatEndedIt) {
  WaitCollector c([] { return std::make_unique<TwoFrameUnwinder>(); }, {}, 0, 1);
  auto wake = [](uint64_t caller, uint64_t lock, uint64_t start_ns) {
    WaitEvent e = wait_event(false, caller, 0, lock, true, false);
    e.wake = true;
    e.start_ns = start_ns;
    return e;
  };
  auto wait = [](uint64_t caller, uint64_t lock, uint64_t end_ns, uint64_t delay_ns) {
    WaitEvent e = wait_event(true, caller, delay_ns, lock, true, false);
    e.end_ns = end_ns;
    return e;
  };
  // Lock 0xa0 released by holder 0x7000 at t=100 and by 0x8000 at t=300; lock 0xb0 by
  // 0x9000 at t=150; lock 0xc0 by 0x6000 at t=5 ms (in no particular order: the ring is not
  // strictly ordered).
  c.push(wake(0x8000, 0xa0, 300));
  c.push(wake(0x7000, 0xa0, 100));
  c.push(wake(0x9000, 0xb0, 150));
  c.push(wake(0x6000, 0xc0, 5'000'000));
  c.push(wait(0x2000, 0xa0, 120, 50));  // woken by 0x7000's release
  c.push(wait(0x2000, 0xa0, 350, 70));  // by 0x8000's
  c.push(wait(0x2000, 0xb0, 400, 30));  // by 0x9000's (a release of another lock is not it)
  // Ended 10 ns before any release of its lock was stamped: the first one, whose unlock
  // freed the lock before its wake call (the waiter took it in between).
  c.push(wait(0x2000, 0xa0, 90, 10));
  // Nothing released 0xc0 within 1 ms before or after: unattributed.
  c.push(wait(0x2000, 0xc0, 1'000'000, 40));
  c.finish();
  std::map<uint64_t, int64_t> delay_by_holder;
  for (const auto& r : c.mutex_holders().rows()) {
    const auto& frames = c.stacks().get(r.stack);
    delay_by_holder[frames.at(1).pc] += r.values[1];
  }
  EXPECT_EQ(delay_by_holder,
            (std::map<uint64_t, int64_t>{{0x7000, 60}, {0x8000, 70}, {0x9000, 30}}));
  EXPECT_EQ(c.stats().unattributed, 1u);
  EXPECT_EQ(c.stats().wakes, 4u);
}

TEST(WaitOptions, BlockRateAndMutexFractionParseOrFailAsUsageErrors) {
  EXPECT_EQ(cli::parse_block_rate_ns("10us"), 10'000u);
  EXPECT_EQ(cli::parse_block_rate_ns("1"), 1u);
  EXPECT_EQ(cli::parse_block_rate_ns("1.5ms"), 1'500'000u);
  EXPECT_EQ(cli::parse_block_rate_ns("2s"), 2'000'000'000u);
  for (const char* bad : {"", "0", "0.4ns", "-1", "10 us", "10min", "us", "1e30"}) {
    EXPECT_THROW(cli::parse_block_rate_ns(bad), UserError) << bad;
  }
  cli::WaitOptionsCli o;
  o.mutex_fraction = "5";
  EXPECT_EQ(cli::resolve_wait_options(o).mutex_fraction, 5u);
  for (const char* bad : {"0", "-2", "x", "2000000", ""}) {
    o.mutex_fraction = bad;
    EXPECT_THROW(cli::resolve_wait_options(o), UserError) << bad;
  }
}

}  // namespace
}  // namespace profctl
