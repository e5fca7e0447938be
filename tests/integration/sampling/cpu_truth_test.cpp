// SPDX-License-Identifier: MIT
// CPU truth on an oversubscribed machine: the cpu profile of a program whose three
// functions take 50/30/20 % of its CPU (measured by the program itself around every call
// with CLOCK_THREAD_CPUTIME_ID), profiled beside 16 processes that keep both CPUs busy with
// short bursts and many wakeups. Sampled from a ticker, a thread that waits for a CPU stops
// where it was preempted, mostly at a syscall's return (the program's clock reads), and
// that place used to get 34-89 % of the CPU. The profile's total must be the workers' CPU
// time too, as the program reads it from their CPU clocks. Target: sampling_truth.c.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <sstream>
#include <thread>

#include "sampling_support.h"
#include "support/procfs.h"

namespace profctl::testing::sampling {
namespace {

// "fifty=NS thirty=NS twenty=NS cpu=NS" -> the four values.
std::vector<long long> parse_truth(const std::string& line) {
  std::vector<long long> out;
  std::istringstream in(line);
  std::string word;
  while (in >> word) {
    out.push_back(std::stoll(word.substr(word.find('=') + 1)));
  }
  return out;
}

// Every thread of pid (the main one and both workers) is traced: profctl has taken each
// thread's CPU mark, from which its samples count.
bool all_traced(pid_t pid) {
  const auto tids = task_ids(pid);
  return tids.size() == 3 &&
         std::all_of(tids.begin(), tids.end(), [&](pid_t tid) { return tracer_pid(pid, tid) > 0; });
}

// Both of the CPU clocks' paths: the kernel's sample records (the default where allowed) and
// the overflow signals (PROFCTL_CPU_SIGNALS=1, the path of a machine that refuses records).
class CpuTruth : public ::testing::TestWithParam<std::string> {};

TEST_P(CpuTruth, SharesMatchTheProgramsOwnMeasureOnAnOversubscribedMachine) {
  PROFCTL_REQUIRE_PROFCTL();
  const bool signals = GetParam() == "signals";
  // The competitors: 16 processes of ~100 us bursts and 50 us sleeps (killed by pid by
  // their Child destructors, and with PR_SET_PDEATHSIG should the test die).
  std::vector<std::unique_ptr<Child>> hogs;
  for (int i = 0; i < 16; ++i) {
    hogs.push_back(std::make_unique<Child>(std::vector<std::string>{SAMPLING_TRUTH, "hog"}));
  }
  // Units of 100000 iterations: the clock reads around the calls then cost well under 1 %.
  Child target({SAMPLING_TRUTH, "work", "100000"});
  ASSERT_TRUE(target.wait_ready());
  std::this_thread::sleep_for(milliseconds(500));
  TempDir dir;
  // The truth is read inside the capture, as close to its ends as the test can: once every
  // thread is traced, and before profctl is told to stop.
  auto argv = attach_argv(
      target.pid(), {"--profiles", "cpu", "--rate", "499", "-o", dir.path(), "--format", "json"});
  if (signals) {
    argv.insert(argv.begin(), {"/usr/bin/env", "PROFCTL_CPU_SIGNALS=1"});  // env execs profctl
  }
  BgProcess p(argv);
  ASSERT_TRUE(
      wait_until([&] { return all_traced(target.pid()); }, milliseconds(30000), milliseconds(1)))
      << p.err();
  auto t0 = target.command("truth");
  ASSERT_TRUE(t0);
  // Long enough for the bound to be about the profile, not the draw: with the test suite
  // beside the hogs the workers get ~1 s of CPU in 8 s, ~500 samples at 499 Hz, and a
  // half share's standard error is then 2.3 points (5.3 points off was seen once in a full
  // run). 14 s: ~850 samples, 1.7 points; and 5.8 points off was seen again (2026-12-08, the
  // signals path, 1.6 s of worker CPU). 20 s: ~1,200 samples, 1.4 points.
  std::this_thread::sleep_for(milliseconds(20000));
  auto t1 = target.command("truth");
  ASSERT_TRUE(t1);
  end_with_sigint(p);
  const auto a = parse_truth(*t0);
  const auto b = parse_truth(*t1);
  ASSERT_EQ(a.size(), 4u) << *t0;
  ASSERT_EQ(b.size(), 4u) << *t1;
  std::vector<double> truth(3);
  double in_functions = 0;
  for (int i = 0; i < 3; ++i) {
    truth[i] = static_cast<double>(b[i] - a[i]);
    in_functions += truth[i];
  }
  ASSERT_GT(in_functions, 0);
  // The workers' whole CPU time in the window, and what of it was outside the three
  // functions: the clock reads around them.
  const auto workers_cpu = static_cast<double>(b[3] - a[3]);
  ASSERT_GT(workers_cpu, 0);
  const double outside = 100.0 * (1.0 - in_functions / workers_cpu);

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  // The capture says which path made it (this machine allows both: the tests run as root).
  EXPECT_EQ(capture->at("options").value("cpu_samples", ""),
            signals ? "cpu timer signals" : "perf records");
  const Json* cpu = profile_of(*capture, "cpu");
  ASSERT_NE(cpu, nullptr);
  const int ci = value_index(*cpu, "cpu");
  const char* names[3] = {"work_fifty", "work_thirty", "work_twenty"};
  // A worker's whole stack (sampling_truth.c): in a unit of one of the three functions, in
  // the function itself, or in the worker's own loop (its clock reads around the calls).
  auto worker_stack = [&](const Json& s) {
    for (const char* f : names) {
      if (stack_ends_with(s, then({"unit", f, "worker"}, thread_root())) ||
          stack_ends_with(s, then({f, "worker"}, thread_root()))) {
        return ::testing::AssertionSuccess();
      }
    }
    return stack_ends_with(s, then({"worker"}, thread_root()));
  };
  std::vector<double> got(3, 0.0);
  double clock = 0;
  double total = 0;
  double workers_total = 0;
  for (const Json& s : cpu->at("samples")) {
    const auto v = static_cast<double>(s.at("values").at(ci).get<long long>());
    total += v;
    if (label(s, "thread_name") == "worker") {
      workers_total += v;
      EXPECT_TRUE(worker_stack(s));
    }
    bool in_work = false;
    for (int i = 0; i < 3; ++i) {
      if (has_function(s, names[i])) {
        got[i] += v;
        in_work = true;
        break;
      }
    }
    const auto& frames = s.at("frames");
    for (size_t k = 0; !in_work && k < frames.size() && k < 3; ++k) {
      if (frames[k].value("function", "").find("clock_gettime") != std::string::npos) {
        clock += v;
        break;
      }
    }
  }
  ASSERT_GT(total, 0);
  std::ostringstream report;
  for (int i = 0; i < 3; ++i) {
    report << names[i] << " profile " << 100 * got[i] / total << "% truth "
           << 100 * truth[i] / in_functions << "%; ";
  }
  report << "clock profile " << 100 * clock / total << "% truth " << outside << "%; workers "
         << workers_total / 1e6 << " ms profile, " << workers_cpu / 1e6 << " ms truth";
  std::printf("cpu truth: %s\n", report.str().c_str());
  for (int i = 0; i < 3; ++i) {
    // Shares of the three functions' time (the truth covers only theirs).
    const double share = 100 * got[i] / (got[0] + got[1] + got[2]);
    EXPECT_NEAR(share, 100 * truth[i] / in_functions, 5.0) << report.str();
  }
  EXPECT_LT(100 * clock / total, 3.0) << report.str();
  EXPECT_NEAR(100 * clock / total, outside, 2.0) << report.str();
  // The total: each cpu sample carries the thread's CPU time since its previous sample (read
  // from schedstat at the stop, or the clock's own count in the record), so the workers' samples
  // sum to their CPU time from profctl's attach to their last sample. Against the window between
  // the truth reads that differs by the CPU they ran between the attach and the first read, and
  // between the last read and the stop (a few ms of wall time each; at most 2 CPUs), and by the
  // time after each worker's last sample (under one period, 2 ms at 499 Hz). 3 % of ~3 s of
  // worker CPU (here each worker has ~1/9 of a CPU; more on a bigger machine) is 90 ms of CPU: the
  // edges stay well inside it, while a lost sample's time, a sample charged a fixed period
  // instead of the CPU it stands for, or a dropped thread shows beyond it.
  const double period_ns = 1e9 / 499;
  EXPECT_NEAR(workers_total, workers_cpu, 0.03 * workers_cpu + 2 * 2 * period_ns) << report.str();
}

INSTANTIATE_TEST_SUITE_P(Paths, CpuTruth, ::testing::Values("records", "signals"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace profctl::testing::sampling
