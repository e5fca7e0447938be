// SPDX-License-Identifier: MIT
// PerfSampler on a thread of the test process itself: the kernel's records carry the
// thread's registers and its stack, one record per period of its CPU time.
#include "attach/perf_sampler.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

namespace profctl {
namespace {

std::atomic<bool> g_go{false};
std::atomic<bool> g_stop{false};
std::atomic<pid_t> g_tid{0};
std::atomic<uint64_t> g_spin_sp{0};
std::atomic<bool> g_spun{false};
std::atomic<uint64_t> g_spun_at{0};  // CLOCK_MONOTONIC when spin_for returned

uint64_t monotonic_now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

uint64_t thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

// A marker on the spinner's stack: every record's stack copy starts below it and holds it.
constexpr uint64_t kMarker = 0x5eed5eed5eed5eedULL;

__attribute__((noinline)) uint64_t spin_for(uint64_t cpu_ns) {
  volatile uint64_t marker = kMarker;
  g_spin_sp.store(reinterpret_cast<uint64_t>(&marker));
  const uint64_t end = thread_cpu_ns() + cpu_ns;
  uint64_t n = 0;
  while (thread_cpu_ns() < end) {
    ++n;
  }
  return n + marker;
}

TEST(PerfSampler, RecordsCarryRegistersAndStackOncePerPeriodOfCpu) {
  std::thread spinner([] {
    g_tid.store(static_cast<pid_t>(syscall(SYS_gettid)));
    while (!g_go.load()) {  // sleeps: no CPU (no record) before the spin
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    spin_for(300'000'000);  // 300 ms of CPU
    g_spun_at = monotonic_now();
    g_spun = true;
    while (!g_stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  while (g_tid.load() == 0) {
    std::this_thread::yield();
  }
  constexpr uint64_t kPeriod = 10'000'000;  // 10 ms of CPU
  PerfSampler sampler(kPeriod, 8192);
  if (auto r = sampler.add(g_tid.load()); !r) {
    g_stop = true;
    g_go = true;
    spinner.join();
    GTEST_SKIP() << "perf events refused here: " << r.error().message();
  }
  g_go = true;
  std::vector<PerfSample> got;
  // Drained while it runs (the ring holds a few records only), as the session does at ticks.
  // Until the spin is over, however long a loaded machine makes it take (at most 60 s).
  for (int i = 0; i < 12000 && !g_spun.load(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    sampler.drain(g_tid.load(), [&](PerfSample&& s) { got.push_back(std::move(s)); });
  }
  g_stop = true;
  spinner.join();
  sampler.remove(g_tid.load(), [&](PerfSample&& s) { got.push_back(std::move(s)); });

  EXPECT_EQ(sampler.lost(), 0u);
  // Each record carries the CPU since the previous one: up to about a period each (the
  // kernel's timer restarts its period when the thread is scheduled in, so a record can come
  // early), and together the CPU of the spin (300 ms) give or take its start and end.
  uint64_t cpu = 0;
  for (const PerfSample& s : got) {
    EXPECT_GT(s.cpu_ns, 0u);
    EXPECT_LE(s.cpu_ns, kPeriod * 2);
    cpu += s.cpu_ns;
  }
  EXPECT_NEAR(static_cast<double>(cpu), 300e6, 30e6);
  EXPECT_EQ(sampler.malformed(), 0u);
  // 300 ms of CPU at one record per 10 ms: 30, give or take the spin's start and end.
  EXPECT_GE(got.size(), 27u);
  EXPECT_LE(got.size(), 33u);
  const uint64_t marker_at = g_spin_sp.load();
  size_t with_marker = 0;
  uint64_t last_time = 0;
  for (const PerfSample& s : got) {
    EXPECT_EQ(s.tid, g_tid.load());
    EXPECT_EQ(s.pid, getpid());
    EXPECT_EQ(s.snap.tid, s.tid);
    EXPECT_GE(s.time_ns, last_time);  // oldest first
    last_time = s.time_ns;
    EXPECT_EQ(s.snap.stack_base, s.snap.regs.rsp);
    EXPECT_GT(s.snap.stack_size, 0u);
    EXPECT_LE(s.snap.stack_size, 8192u);
    // The copy is of the thread's own stack: the marker sits where spin_for put it (a record
    // taken once it returned sees what later calls wrote there).
    if (s.time_ns < g_spun_at.load() && marker_at >= s.snap.stack_base &&
        marker_at + 8 <= s.snap.stack_base + s.snap.stack_size) {
      uint64_t v = 0;
      std::memcpy(&v, s.snap.stack_bytes.get() + (marker_at - s.snap.stack_base), 8);
      EXPECT_EQ(v, kMarker);
      ++with_marker;
    }
  }
  // Nearly every record is taken inside spin_for (or the clock call it makes).
  EXPECT_GE(with_marker, got.size() * 8 / 10);
}

TEST(PerfSampler, AThreadThatDoesNotRunMakesNoRecords) {
  std::atomic<bool> stop{false};
  std::atomic<pid_t> tid{0};
  std::thread sleeper([&] {
    tid.store(static_cast<pid_t>(syscall(SYS_gettid)));
    while (!stop.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  while (tid.load() == 0) {
    std::this_thread::yield();
  }
  PerfSampler sampler(1'000'000, 4096);
  if (auto r = sampler.add(tid.load()); !r) {
    stop = true;
    sleeper.join();
    GTEST_SKIP() << "perf events refused here: " << r.error().message();
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  size_t n = sampler.drain_all([](PerfSample&&) {});
  stop = true;
  sleeper.join();
  // Ten wake-ups of microseconds each: far less than one 1 ms period of CPU.
  EXPECT_LE(n, 1u);
}

// The switch records: a thread asleep is not runnable and its switch-in count stands still;
// once it wakes and spins it is runnable and the count has moved.
TEST(PerfSampler, SwitchRecordsSayWhetherAThreadRunsOrSleeps) {
  std::atomic<int> phase{0};  // 0 naps, 2 one long wait, 1 spin, 3 exit
  std::atomic<pid_t> tid{0};
  std::thread t([&] {
    tid.store(static_cast<pid_t>(syscall(SYS_gettid)));
    for (int p = phase.load(); p != 3; p = phase.load()) {
      if (p == 0) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      } else if (p == 2) {
        phase.wait(2);  // a futex wait until the test moves on
      }                 // 1: spin
    }
  });
  while (tid.load() == 0) {
    std::this_thread::yield();
  }
  PerfSampler sampler(10'000'000, 1024);
  auto finish = [&] {
    phase = 3;
    phase.notify_all();
    t.join();
  };
  if (auto r = sampler.add(tid.load()); !r) {
    finish();
    GTEST_SKIP() << "perf events refused here: " << r.error().message();
  }
  // Drained every 5 ms, as the session does at its ticks (the ring holds a few records).
  auto wait_ms = [&](int ms) {
    for (int i = 0; i < ms / 5; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      sampler.drain(tid.load(), [](PerfSample&&) {});
    }
  };
  auto state = [&] {
    sampler.drain(tid.load(), [](PerfSample&&) {});
    return sampler.run_state(tid.load());
  };
  wait_ms(100);
  const RunState napping = state();
  if (!napping.known) {
    finish();
    // Switch records came with Linux 4.3: a newer kernel that gives none is a failure.
    utsname u{};
    int major = 0;
    int minor = 0;
    ASSERT_EQ(uname(&u), 0);
    ASSERT_EQ(std::sscanf(u.release, "%d.%d", &major, &minor), 2);
    ASSERT_TRUE(major < 4 || (major == 4 && minor < 3)) << "no switch records on " << u.release;
    GTEST_SKIP() << "no context switch records on this kernel";
  }
  EXPECT_GT(napping.ins, 10u) << "a hundred 1 ms naps, each a switch in";
  phase = 2;
  wait_ms(100);
  const RunState asleep = state();
  wait_ms(200);
  const RunState still = state();
  EXPECT_TRUE(asleep.known);
  EXPECT_FALSE(asleep.runnable);
  EXPECT_FALSE(still.runnable);
  EXPECT_EQ(still.ins, asleep.ins) << "a thread asleep is not switched in";
  phase = 1;
  phase.notify_all();
  wait_ms(100);
  const RunState spinning = state();
  finish();
  EXPECT_TRUE(spinning.known);
  EXPECT_TRUE(spinning.runnable) << "on a CPU, or preempted while runnable";
  EXPECT_GT(spinning.ins, still.ins);
  EXPECT_EQ(sampler.lost(), 0u);
}

}  // namespace
}  // namespace profctl
