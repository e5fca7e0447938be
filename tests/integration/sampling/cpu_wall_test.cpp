// SPDX-License-Identifier: MIT
// The cpu and wall profiles: CPU time charged to the right functions in the right proportion and
// in the right total, and wall time for every thread, sleeping or not, with its tid, name and
// state. Targets: sampling_burn.c (burn_a : burn_b = 3 : 1 of CPU) and sampling_sleep_spin.c.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <set>
#include <sstream>

#include "sampling_support.h"
#include "support/procfs.h"

namespace profctl::testing::sampling {
namespace {

// Time the hypervisor stole from every CPU so far (/proc/stat's steal column, summed over
// the "cpu" line), in ns.
long long steal_ns() {
  std::istringstream in(read_text("/proc/stat").value_or(""));
  std::string cpu;
  long long v[8] = {};
  in >> cpu >> v[0] >> v[1] >> v[2] >> v[3] >> v[4] >> v[5] >> v[6] >> v[7];
  return cpu == "cpu" ? v[7] * (1'000'000'000LL / sysconf(_SC_CLK_TCK)) : 0;
}

TEST(SamplingCpu, BurnAandBurnBGetTheirThreeToOneShareAndTheTotalIsTheCpuUsed) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SAMPLING_BURN});
  auto ready = target.wait_ready();
  ASSERT_TRUE(ready) << "sampling_burn did not say ready";
  auto kv = parse_key_values(*ready);
  const pid_t pid = target.pid();

  TempDir dir;
  // The CPU the target used while it was traced, from the kernel's own per-thread accounting.
  const pid_t tid_a = static_cast<pid_t>(std::stol(kv.at("a")));
  const pid_t tid_b = static_cast<pid_t>(std::stol(kv.at("b")));
  const long long cpu_at_launch = process_cpu_ns(pid);
  const long long steal_at_launch = steal_ns();
  BgProcess profctl_run(attach_argv(pid, {"-d", "3s", "--profiles", "cpu", "-o", dir.path()}));
  ASSERT_TRUE(wait_traced(pid)) << "profctl never attached: " << profctl_run.err();
  const long long cpu_at_attach = process_cpu_ns(pid);
  const long long a_at_attach = task_cpu_ns(pid, tid_a);
  const long long b_at_attach = task_cpu_ns(pid, tid_b);
  ASSERT_TRUE(wait_untraced(pid)) << "profctl never detached: " << profctl_run.err();
  const long long cpu_at_detach = process_cpu_ns(pid);
  const long long steal_at_detach = steal_ns();
  const long long a_used = task_cpu_ns(pid, tid_a) - a_at_attach;
  const long long b_used = task_cpu_ns(pid, tid_b) - b_at_attach;
  auto status = profctl_run.wait_exit(milliseconds(60000));
  ASSERT_TRUE(status) << "profctl attach -d 3s did not end\n" << profctl_run.err();
  ASSERT_EQ(exit_code_of(*status), 0) << profctl_run.describe_status() << "\n" << profctl_run.err();
  EXPECT_TRUE(untouched(pid));

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* p = profile_of(*capture, "cpu");
  ASSERT_NE(p, nullptr);
  const int cpu = value_index(*p, "cpu");
  ASSERT_GE(cpu, 0);
  const std::string samples = describe_samples(*p, 30);
  auto lost = [&](const Json& doc) {
    return " (profile dropped=" + p->value("dropped", Json()).dump() +
           ", warnings=" + doc.value("warnings", Json()).dump() + ")";
  };
  auto in_a = [](const Json& s) { return has_function(s, "burn_a"); };
  auto in_b = [](const Json& s) { return has_function(s, "burn_b"); };
  const long long a = sum_values(*p, cpu, in_a);
  const long long b = sum_values(*p, cpu, in_b);
  const long long total = sum_values(*p, cpu);
  ASSERT_GT(b, 0) << "no cpu time under burn_b\n" << samples;
  // Each burner's stacks all contain its function, and the profile charges a thread's CPU time
  // since its last sample: the ratio is 3 up to the CPU used after each thread's last sample
  // (one period, ~10 ms of ~2 s): +-5% is generous.
  const double ratio = static_cast<double>(a) / static_cast<double>(b);
  std::ostringstream why;
  why << "cpu ns under burn_a " << a << " / burn_b " << b << " = " << ratio
      << "; while traced (schedstat) burner-a used " << a_used << " ns, burner-b " << b_used
      << " ns (ratio " << static_cast<double>(a_used) / static_cast<double>(b_used) << ")"
      << lost(*capture) << "\n"
      << samples;
  EXPECT_GE(ratio, 2.85) << why.str();
  EXPECT_LE(ratio, 3.15) << why.str();
  // Every sample has its thread's whole stack: a burner's from burn_x to clone3, the main
  // thread's from burn_command_loop to _start (an unwinder that stops early fails here).
  const auto stack_a = then({"burn_a", "burner_a_main"}, thread_root());
  const auto stack_b = then({"burn_b", "burner_b_main"}, thread_root());
  const auto stack_main = then({"burn_command_loop"}, main_root());
  for (const Json& s : p->at("samples")) {
    if (in_a(s)) {
      EXPECT_EQ(label(s, "tid"), kv.at("a")) << s.dump();
      EXPECT_EQ(label(s, "thread_name"), "burner-a");
    }
    if (in_b(s)) {
      EXPECT_EQ(label(s, "tid"), kv.at("b")) << s.dump();
      EXPECT_EQ(label(s, "thread_name"), "burner-b");
    }
    const std::string tid = label(s, "tid");
    if (tid == kv.at("a")) {
      EXPECT_TRUE(stack_ends_with(s, stack_a));
    } else if (tid == kv.at("b")) {
      EXPECT_TRUE(stack_ends_with(s, stack_b));
    } else {
      EXPECT_TRUE(stack_ends_with(s, stack_main)) << "tid " << tid;
    }
  }
  // Almost all of the target's CPU is in the burners.
  EXPECT_GE(a + b, total * 95 / 100)
      << "cpu ns: burn_a " << a << " burn_b " << b << " all " << total << "\n"
      << samples;

  // The total is the CPU the kernel says the target used between attach and detach, less what
  // it used before the first and after the last sample.
  const long long used = cpu_at_detach - cpu_at_attach;
  ASSERT_GT(used, 0);
  const double share = static_cast<double>(total) / static_cast<double>(used);
  EXPECT_GE(share, 0.88) << "cpu profile total " << total << " ns, the target used " << used
                         << " ns while traced (schedstat). " << why.str();
  // The bound above can only be loose: the test sees the attach by polling, late by its own
  // scheduling delay (seen: 250 ms on a loaded CI machine). This one cannot be late: the CPU
  // read before profctl starts covers every nanosecond profctl could honestly charge, and CPU
  // from before the attach (the burners ran ~1 s before it, ~1.3 s of CPU) shows far beyond
  // it (1.5x at least). Under a loaded suite the sample records' task clock has summed 4 %
  // and 14 % more than schedstat over the same threads (no steal in the window, no IRQ time
  // accounting in this kernel: not explained yet; the message carries the figures), so the
  // bound is 1.2x, which that bug still far exceeds.
  const long long used_since_launch = cpu_at_detach - cpu_at_launch;
  const long long steal = steal_at_detach - steal_at_launch;
  EXPECT_LE(static_cast<double>(total),
            static_cast<double>(used_since_launch) * 1.2 + static_cast<double>(steal))
      << "cpu profile total " << total << " ns, the target used " << used_since_launch
      << " ns from before profctl started to its detach (schedstat), the CPUs lost " << steal
      << " ns to the hypervisor meanwhile, " << used
      << " ns from when the test saw the attach: more CPU than was used is charged (CPU from "
         "before the attach?); cpu samples from "
      << capture->value("options", Json()).value("cpu_samples", Json()).dump();
  EXPECT_TRUE(outputs_valid(dir.path(), {{"cpu", {"burn_a", "burn_b"}}}));
}

// Both CPU clock paths: with records or timer signals, the spinner's wall samples are its
// CPU clock's samples (no stop of its own at the ticks), and must still add up to its wall.
class SamplingWallAndCpu : public ::testing::TestWithParam<std::string> {};

TEST_P(SamplingWallAndCpu, WallShowsTheSleeperAndTheSpinnerCpuOnlyTheSpinner) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SAMPLING_SLEEP_SPIN});
  auto ready = target.wait_ready();
  ASSERT_TRUE(ready) << "sampling_sleep_spin did not say ready";
  auto kv = parse_key_values(*ready);
  const pid_t pid = target.pid();
  const std::string sleeper = kv.at("sleeper");
  const std::string spinner = kv.at("spinner");
  // What the kernel calls every thread, to check the labels against.
  std::map<std::string, std::string> comm;
  for (pid_t tid : task_ids(pid)) {
    comm[std::to_string(tid)] = task_comm(pid, tid);
  }
  ASSERT_EQ(comm.size(), 3u);
  ASSERT_EQ(comm.at(sleeper), "sleeper");
  ASSERT_EQ(comm.at(spinner), "spinner");

  TempDir dir;
  std::vector<std::string> argv = {PROFCTL_BIN, "attach", std::to_string(pid),
                                   "-d",        "2s",     "--profiles",
                                   "cpu,wall",  "-o",     dir.path()};
  if (GetParam() == "signals") {
    argv.insert(argv.begin(), {"/usr/bin/env", "PROFCTL_CPU_SIGNALS=1"});  // env execs profctl
  }
  RunResult r = run(argv);
  ASSERT_FALSE(r.timed_out) << r.describe();
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(untouched(pid));
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);

  const Json* wall = profile_of(*capture, "wall");
  ASSERT_NE(wall, nullptr);
  const int wall_ns = value_index(*wall, "wall");
  const int wall_n = value_index(*wall, "samples");
  ASSERT_GE(wall_ns, 0);
  ASSERT_GE(wall_n, 0);
  const std::string wall_samples = describe_samples(*wall, 30);
  auto tid_is = [](const std::string& tid) {
    return [tid](const Json& s) { return label(s, "tid") == tid; };
  };
  for (const Json& s : wall->at("samples")) {
    const std::string tid = label(s, "tid");
    ASSERT_TRUE(comm.count(tid)) << "wall sample of an unknown tid " << s.dump();
    EXPECT_EQ(label(s, "thread_name"), comm.at(tid)) << s.dump();
    if (has_function(s, "sleeper_loop")) {
      EXPECT_EQ(tid, sleeper) << s.dump();
      EXPECT_EQ(label(s, "state"), "sleeping") << s.dump();
    }
    if (has_function(s, "spin_loop")) {
      EXPECT_EQ(tid, spinner) << s.dump();
      EXPECT_EQ(label(s, "state"), "running") << s.dump();
    }
    // Whole stacks, each thread's own (a truncated or misplaced stack fails).
    if (tid == sleeper) {
      EXPECT_TRUE(stack_ends_with(s, then({"sleeper_loop", "sleeper_main"}, thread_root())));
    } else if (tid == spinner) {
      EXPECT_TRUE(stack_ends_with(s, then({"spin_loop", "spinner_main"}, thread_root())));
    } else {
      EXPECT_TRUE(stack_ends_with(s, then({"sleep_spin_command_loop"}, main_root())));
    }
  }
  const long long sleeper_wall = sum_values(*wall, wall_ns, tid_is(sleeper));
  const long long spinner_wall = sum_values(*wall, wall_ns, tid_is(spinner));
  const long long sleeper_ticks = sum_values(*wall, wall_n, tid_is(sleeper));
  const long long spinner_ticks = sum_values(*wall, wall_n, tid_is(spinner));
  EXPECT_GT(sleeper_ticks, 0) << "no wall sample of the sleeper\n" << wall_samples;
  EXPECT_GT(spinner_ticks, 0) << "no wall sample of the spinner\n" << wall_samples;
  // Every thread is sampled at every tick: both threads lived through the whole capture, so they
  // have the same wall time, within a couple of ticks (~10 ms each of ~2 s).
  EXPECT_LE(std::llabs(sleeper_wall - spinner_wall), (sleeper_wall + spinner_wall) / 2 / 50)
      << "wall ns (within 2%): sleeper " << sleeper_wall << " (" << sleeper_ticks
      << " samples), spinner " << spinner_wall << " (" << spinner_ticks << " samples)";
  // The sample counts are not compared: a tick whose stop of the spinner comes late (the CPU
  // was busy) is folded into the spinner's next sample with its wall time, so on a loaded
  // machine the spinner has fewer, longer samples. The wall time above is what the profile
  // promises, and it stays within 2%.
  std::printf("wall samples: sleeper %lld spinner %lld\n", sleeper_ticks, spinner_ticks);

  const Json* cpu = profile_of(*capture, "cpu");
  ASSERT_NE(cpu, nullptr);
  const int cpu_n = value_index(*cpu, "samples");
  const std::string cpu_samples = describe_samples(*cpu, 30);
  for (const Json& s : cpu->at("samples")) {
    EXPECT_FALSE(has_function(s, "sleeper_loop")) << "a sleeping thread in the cpu profile\n"
                                                  << s.dump();
    EXPECT_NE(label(s, "tid"), sleeper) << s.dump();
    const std::string tid = label(s, "tid");
    if (tid == spinner) {
      EXPECT_TRUE(stack_ends_with(s, then({"spin_loop", "spinner_main"}, thread_root())));
    }
    ASSERT_TRUE(comm.count(tid)) << "cpu sample of an unknown tid " << s.dump();
    EXPECT_EQ(label(s, "thread_name"), comm.at(tid)) << s.dump();
  }
  auto spin = [&](const Json& s) { return has_function(s, "spin_loop"); };
  EXPECT_GT(sum_values(*cpu, cpu_n, spin), 0) << "the spinner is not in the cpu profile\n"
                                              << cpu_samples;
  EXPECT_EQ(sum_values(*cpu, cpu_n, spin), sum_values(*cpu, cpu_n, tid_is(spinner))) << cpu_samples;
  EXPECT_TRUE(
      outputs_valid(dir.path(), {{"wall", {"sleeper_loop", "spin_loop"}}, {"cpu", {"spin_loop"}}}));
  EXPECT_EQ(target.command("ping"), "pong");
  EXPECT_EQ(capture->value("options", Json()).value("cpu_samples", ""),
            GetParam() == "signals" ? "cpu timer signals" : "perf records");
}

INSTANTIATE_TEST_SUITE_P(Paths, SamplingWallAndCpu, ::testing::Values("records", "signals"));

}  // namespace
}  // namespace profctl::testing::sampling
