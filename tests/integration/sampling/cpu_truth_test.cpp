// SPDX-License-Identifier: MIT
// CPU truth on an oversubscribed machine: the cpu profile of a program whose three
// functions take 50/30/20 % of its CPU (measured by the program itself around every call
// with CLOCK_THREAD_CPUTIME_ID), profiled beside 16 processes that keep both CPUs busy with
// short bursts and many wakeups. Sampled from a ticker, a thread that waits for a CPU stops
// where it was preempted, mostly at a syscall's return (the program's clock reads), and
// that place used to get 34-89 % of the CPU. Target: sampling_truth.c.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>

#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

namespace fs = std::filesystem;

// "fifty=NS thirty=NS twenty=NS" -> the three values.
std::vector<long long> parse_truth(const std::string& line) {
  std::vector<long long> out;
  std::istringstream in(line);
  std::string word;
  while (in >> word) {
    out.push_back(std::stoll(word.substr(word.find('=') + 1)));
  }
  return out;
}

// CPU time of the target's "worker" threads (schedstat, ns).
long long workers_cpu_ns(pid_t pid) {
  long long sum = 0;
  const std::string task = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(task, ec)) {
    if (read_text(e.path().string() + "/comm").value_or("").rfind("worker", 0) != 0) {
      continue;
    }
    sum += std::atoll(read_text(e.path().string() + "/schedstat").value_or("0").c_str());
  }
  return sum;
}

TEST(CpuTruth, SharesMatchTheProgramsOwnMeasureOnAnOversubscribedMachine) {
  PROFCTL_REQUIRE_PROFCTL();
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
  const long long cpu0 = workers_cpu_ns(target.pid());
  auto t0 = target.command("truth");
  ASSERT_TRUE(t0);
  auto r = run({PROFCTL_BIN, "attach", std::to_string(target.pid()), "--profiles", "cpu", "--rate",
                "499", "-d", "8s", "-o", dir.path(), "--format", "json"});
  auto t1 = target.command("truth");
  const long long cpu1 = workers_cpu_ns(target.pid());
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  ASSERT_TRUE(t1);
  const auto a = parse_truth(*t0);
  const auto b = parse_truth(*t1);
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  std::vector<double> truth(3);
  double in_functions = 0;
  for (int i = 0; i < 3; ++i) {
    truth[i] = static_cast<double>(b[i] - a[i]);
    in_functions += truth[i];
  }
  ASSERT_GT(in_functions, 0);
  // What the workers spent outside the three functions: the clock reads around them.
  const double outside = 100.0 * (1.0 - in_functions / static_cast<double>(cpu1 - cpu0));

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* cpu = profile_of(*capture, "cpu");
  ASSERT_NE(cpu, nullptr);
  const int ci = value_index(*cpu, "cpu");
  const char* names[3] = {"work_fifty", "work_thirty", "work_twenty"};
  std::vector<double> got(3, 0.0);
  double clock = 0;
  double total = 0;
  for (const Json& s : cpu->at("samples")) {
    const auto v = static_cast<double>(s.at("values").at(ci).get<long long>());
    total += v;
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
  report << "clock profile " << 100 * clock / total << "% truth " << outside << "%";
  std::printf("cpu truth: %s\n", report.str().c_str());
  for (int i = 0; i < 3; ++i) {
    // Shares of the three functions' time (the truth covers only theirs).
    const double share = 100 * got[i] / (got[0] + got[1] + got[2]);
    EXPECT_NEAR(share, 100 * truth[i] / in_functions, 5.0) << report.str();
  }
  EXPECT_LT(100 * clock / total, 3.0) << report.str();
  EXPECT_NEAR(100 * clock / total, outside, 2.0) << report.str();
}

}  // namespace
}  // namespace profctl::testing::sampling
