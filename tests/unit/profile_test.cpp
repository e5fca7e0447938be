// SPDX-License-Identifier: MIT
// profile/: interning, aggregation, and the Collector with a fake unwinder (STYLE 14).
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <thread>

#include "profile/collector.h"
#include "profile/profile_data.h"
#include "profile/stack_table.h"
#include "profile/thread_groups.h"

namespace profctl {
namespace {

TEST(StackTable, InternsEqualStacksOnce) {
  StackTable t;
  std::vector<UnwoundFrame> a{{0x10, true}, {0x20, false}};
  std::vector<UnwoundFrame> b{{0x10, true}, {0x20, false}};
  std::vector<UnwoundFrame> c{{0x10, false}, {0x20, false}};  // activation differs
  std::vector<UnwoundFrame> d{{0x10, true}};
  StackId ia = t.intern(a);
  EXPECT_EQ(t.intern(b), ia);
  EXPECT_NE(t.intern(c), ia);
  EXPECT_NE(t.intern(d), ia);
  EXPECT_EQ(t.size(), 3u);
  EXPECT_EQ(t.get(ia).size(), 2u);
  EXPECT_EQ(t.get(ia)[1].pc, 0x20u);
}

TEST(ProfileData, AddsByStackAndLabels) {
  ProfileData p({{"samples", "count"}, {"cpu", "nanoseconds"}}, {"cpu", "nanoseconds"}, 10);
  p.add(1, {{"tid", "5"}}, {1, 100});
  p.add(1, {{"tid", "5"}}, {1, 50});
  p.add(1, {{"tid", "6"}}, {1, 7});
  p.add(2, {{"tid", "5"}}, {1, 1});
  ASSERT_EQ(p.rows().size(), 3u);
  EXPECT_EQ(p.rows()[0].values, (std::vector<int64_t>{2, 150}));
  EXPECT_EQ(p.rows()[1].values, (std::vector<int64_t>{1, 7}));
  EXPECT_EQ(p.rows()[2].stack, 2u);
}

TEST(GroupThreads, LargestGroupFirstWithEveryTid) {
  ProfileData p = group_threads({{5, 10, "main"}, {7, 11, "w-1"}, {7, 12, "w-2"}, {7, 13, "w-3"}});
  ASSERT_EQ(p.types().size(), 1u);
  EXPECT_EQ(p.types()[0].type, "threads");
  ASSERT_EQ(p.rows().size(), 2u);
  EXPECT_EQ(p.rows()[0].stack, 7u);
  EXPECT_EQ(p.rows()[0].values, (std::vector<int64_t>{3}));
  EXPECT_EQ(p.rows()[0].labels.at("tids"), "11,12,13");
  EXPECT_EQ(p.rows()[0].labels.at("thread_names"), "w-1,w-2,w-3");
  EXPECT_EQ(p.rows()[0].labels.at("tid"), "11");
  EXPECT_EQ(p.rows()[1].values, (std::vector<int64_t>{1}));
  EXPECT_EQ(p.rows()[1].labels.at("thread_name"), "main");
}

// Unwinds a snapshot to a stack made of its rip and rsp: enough to tell snapshots apart.
class FakeUnwinder : public Unwinder {
 public:
  explicit FakeUnwinder(std::atomic<int>* calls) : calls_(calls) {}
  UnwindResult unwind(const Snapshot& s) override {
    ++*calls_;
    return {{{s.regs.rip, true}, {s.regs.rsp, false}}, false, {}};
  }

 private:
  std::atomic<int>* calls_;
};

Snapshot snap(uint64_t rip, uint64_t rsp) {
  Snapshot s;
  s.regs.rip = rip;
  s.regs.rsp = rsp;
  return s;
}

TEST(Collector, CpuWallAndReusedStacks) {
  std::atomic<int> calls{0};
  CollectorOptions o;
  o.cpu = o.wall = o.threadcreate = true;
  o.period_ns = 10'000'000;
  Collector c([&] { return std::make_unique<FakeUnwinder>(&calls); }, o);

  ThreadSample run{7, "spin", 'R', 1, 3000, 10'000'000, 1, snap(0x100, 0x1000)};
  c.on_sample(std::move(run));
  ThreadSample sleep{8, "nap", 'S', 1, 0, 10'000'000, 1, snap(0x200, 0x2000)};
  c.on_sample(std::move(sleep));
  // Thread 8 did not run: no snapshot, its last stack stands.
  ThreadSample again{8, "nap", 'S', 2, 0, 10'000'000, 1, std::nullopt};
  c.on_sample(std::move(again));
  ThreadCreation cr;
  cr.creator = 7;
  cr.creator_name = "spin";
  cr.child = 9;
  cr.snap = snap(0x300, 0x3000);
  c.on_thread_created(std::move(cr));
  c.finish();

  EXPECT_EQ(calls.load(), 3);  // the reused sample was not unwound again
  const auto& cpu = c.profiles().at("cpu");
  ASSERT_EQ(cpu.rows().size(), 1u);  // only the running thread
  EXPECT_EQ(cpu.rows()[0].values, (std::vector<int64_t>{1, 3000}));
  EXPECT_EQ(cpu.rows()[0].labels.at("thread_name"), "spin");
  const auto& wall = c.profiles().at("wall");
  int64_t wall_ns = 0;
  int64_t nap_samples = 0;
  for (const auto& r : wall.rows()) {
    wall_ns += r.values[1];
    if (r.labels.at("tid") == "8") {
      nap_samples += r.values[0];
      EXPECT_EQ(r.labels.at("state"), "sleeping");
    }
  }
  EXPECT_EQ(wall_ns, 30'000'000);
  EXPECT_EQ(nap_samples, 2);
  const auto& tc = c.profiles().at("threadcreate");
  ASSERT_EQ(tc.rows().size(), 1u);
  EXPECT_EQ(tc.rows()[0].labels.at("new_tid"), "9");
  EXPECT_EQ(tc.rows()[0].labels.at("tid"), "7");
  EXPECT_EQ(c.stacks().get(tc.rows()[0].stack)[0].pc, 0x300u);
  EXPECT_EQ(c.stats().dropped, 0u);
}

TEST(Collector, FullQueueDropsAndCounts) {
  std::atomic<int> calls{0};
  std::atomic<bool> release{false};
  CollectorOptions o;
  o.wall = true;
  o.max_queued = 2;
  // The worker blocks in the factory until released, so the queue fills.
  Collector c(
      [&]() -> std::unique_ptr<Unwinder> {
        while (!release.load()) {
          std::this_thread::yield();
        }
        return std::make_unique<FakeUnwinder>(&calls);
      },
      o);
  for (int i = 0; i < 10; ++i) {
    c.on_sample(ThreadSample{1, "t", 'S', 0, 0, 1, 1, snap(0x100 + i, 0x1000)});
  }
  release = true;
  c.finish();
  EXPECT_EQ(c.stats().dropped, 8u);
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(c.profiles().at("wall").dropped, 8u);
}

ThreadCreation creation(pid_t creator, pid_t child, uint64_t rip, size_t stack_size = 0) {
  ThreadCreation c;
  c.creator = creator;
  c.creator_name = "maker";
  c.child = child;
  c.snap = snap(rip, 0x1000);
  c.snap.stack_size = stack_size;  // only counted against the queue's byte budget here
  return c;
}

TEST(Collector, ThreadCreationsPastTheDetailCapAreCountedPerStack) {
  std::atomic<int> calls{0};
  CollectorOptions o;
  o.threadcreate = true;
  o.threadcreate_detail_cap = 3;
  Collector c([&] { return std::make_unique<FakeUnwinder>(&calls); }, o);
  for (pid_t i = 0; i < 1000; ++i) {
    c.on_thread_created(creation(7 + i % 5, 100 + i, i % 2 == 0 ? 0x300 : 0x400));
  }
  c.finish();

  const ProfileData& tc = c.profiles().at("threadcreate");
  size_t labelled = 0;
  std::map<uint64_t, int64_t> per_pc;
  for (const auto& row : tc.rows()) {
    labelled += row.labels.count("new_tid");
    per_pc[c.stacks().get(row.stack)[0].pc] += row.values[0];
  }
  EXPECT_EQ(labelled, 3u);
  EXPECT_EQ(tc.rows().size(), 3u + 2u) << "the detailed rows, then one row per stack";
  EXPECT_EQ(per_pc[0x300], 500);
  EXPECT_EQ(per_pc[0x400], 500);
  EXPECT_EQ(tc.detail_omitted, 997u);
  EXPECT_EQ(tc.dropped, 0u);
}

TEST(Collector, CreationsAreDroppedAndCountedWhenTheQueueIsFull) {
  std::atomic<int> calls{0};
  std::atomic<bool> release{false};
  CollectorOptions o;
  o.threadcreate = true;
  o.max_queued = 4;
  o.max_queued_bytes = 2500;  // two creations of 1000 stack bytes, then a third would not fit
  Collector c(
      [&]() -> std::unique_ptr<Unwinder> {
        while (!release.load()) {
          std::this_thread::yield();
        }
        return std::make_unique<FakeUnwinder>(&calls);
      },
      o);
  for (pid_t i = 0; i < 10; ++i) {
    c.on_thread_created(creation(7, 100 + i, 0x300, 1000));
  }
  release = true;
  c.finish();
  EXPECT_EQ(c.stats().dropped_creations, 8u);
  EXPECT_EQ(c.stats().dropped, 0u);
  EXPECT_EQ(c.profiles().at("threadcreate").dropped, 8u);
  EXPECT_EQ(c.profiles().at("threadcreate").rows().size(), 2u);
}

}  // namespace
}  // namespace profctl
