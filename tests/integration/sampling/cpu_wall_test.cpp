// SPDX-License-Identifier: MIT
// The cpu and wall profiles: CPU time charged to the right functions in the right proportion and
// in the right total, and wall time for every thread, sleeping or not, with its tid, name and
// state. Targets: sampling_burn.c (burn_a : burn_b = 3 : 1 of CPU) and sampling_sleep_spin.c.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <optional>
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

// sampling_sleep_spin: a sleeper, a spinner and the command loop, with what the kernel calls
// each thread (to check the labels against).
struct SleepSpin {
  Child target{{SAMPLING_SLEEP_SPIN}};
  std::string sleeper;
  std::string spinner;
  std::map<std::string, std::string> comm;

  // False (with a failure) when the target did not come up as expected.
  bool start() {
    auto ready = target.wait_ready();
    EXPECT_TRUE(ready) << "sampling_sleep_spin did not say ready";
    if (!ready) {
      return false;
    }
    auto kv = parse_key_values(*ready);
    sleeper = kv.at("sleeper");
    spinner = kv.at("spinner");
    for (pid_t tid : task_ids(target.pid())) {
      comm[std::to_string(tid)] = task_comm(target.pid(), tid);
    }
    EXPECT_EQ(comm.size(), 3u);
    EXPECT_EQ(comm[sleeper], "sleeper");
    EXPECT_EQ(comm[spinner], "spinner");
    return comm.size() == 3 && comm[sleeper] == "sleeper" && comm[spinner] == "spinner";
  }
};

std::function<bool(const Json&)> tid_is(const std::string& tid) {
  return [tid](const Json& s) { return label(s, "tid") == tid; };
}

// The wall profile of sampling_sleep_spin: each thread on its own whole stack with its state,
// and the sleeper's and the spinner's wall time the same (both lived through the capture).
void expect_sleep_spin_wall(const Json& capture, const SleepSpin& t) {
  const auto& comm = t.comm;
  const std::string& sleeper = t.sleeper;
  const std::string& spinner = t.spinner;
  const Json* wall = profile_of(capture, "wall");
  ASSERT_NE(wall, nullptr);
  const int wall_ns = value_index(*wall, "wall");
  const int wall_n = value_index(*wall, "samples");
  ASSERT_GE(wall_ns, 0);
  ASSERT_GE(wall_n, 0);
  const std::string wall_samples = describe_samples(*wall, 30);
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
}

// profctl attach for 2 s on one of the CPU-clock paths ("records", "signals", "ticks").
std::vector<std::string> attach_on_path(pid_t pid, const std::string& profiles,
                                        const std::string& dir, const std::string& path) {
  std::vector<std::string> argv = {
      PROFCTL_BIN, "attach", std::to_string(pid), "-d", "2s", "--profiles", profiles, "-o", dir};
  if (path == "signals") {
    argv.insert(argv.begin(), {"/usr/bin/env", "PROFCTL_CPU_SIGNALS=1"});  // env execs profctl
  } else if (path == "ticks") {
    argv.insert(argv.begin(), {"/usr/bin/env", "PROFCTL_CPU_TICKS=1"});
  }
  return argv;
}

// Runs a capture of `pid` to its end: its capture.json (nullopt, with a failure, when it did
// not run cleanly or left the target touched). `r`: how profctl ran.
std::optional<Json> run_capture(const std::vector<std::string>& argv, pid_t pid, RunResult& r,
                                const std::string& dir) {
  r = run(argv);
  EXPECT_FALSE(r.timed_out) << r.describe();
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(untouched(pid));
  if (r.timed_out || r.exit_code != 0) {
    return std::nullopt;
  }
  auto capture = load_capture(dir);
  EXPECT_TRUE(capture) << "no capture.json in " << dir;
  return capture;
}

// Both CPU clock paths: with records or timer signals, the spinner's wall samples are its
// CPU clock's samples (no stop of its own at the ticks), and must still add up to its wall.
class SamplingWallAndCpu : public ::testing::TestWithParam<std::string> {};

TEST_P(SamplingWallAndCpu, WallShowsTheSleeperAndTheSpinnerCpuOnlyTheSpinner) {
  PROFCTL_REQUIRE_PROFCTL();
  SleepSpin t;
  ASSERT_TRUE(t.start());
  const pid_t pid = t.target.pid();
  const auto& comm = t.comm;
  const std::string& sleeper = t.sleeper;
  const std::string& spinner = t.spinner;

  TempDir dir;
  RunResult r;
  auto capture =
      run_capture(attach_on_path(pid, "cpu,wall", dir.path(), GetParam()), pid, r, dir.path());
  ASSERT_TRUE(capture);

  expect_sleep_spin_wall(*capture, t);
  if (::testing::Test::HasFatalFailure()) {
    return;
  }

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
  EXPECT_EQ(t.target.command("ping"), "pong");
  EXPECT_EQ(capture->value("options", Json()).value("cpu_samples", ""),
            GetParam() == "signals" ? "cpu timer signals" : "perf records");
}

INSTANTIATE_TEST_SUITE_P(Paths, SamplingWallAndCpu, ::testing::Values("records", "signals"));

// A wall profile alone runs the CPU clocks all the same: where the kernel gives sample records,
// the spinner is never stopped for its wall samples (its records say where it runs), and the
// records no tick takes make no cpu profile. On every path the wall profile is the same.
class SamplingWallOnly : public ::testing::TestWithParam<std::string> {};

TEST_P(SamplingWallOnly, RunningThreadsWallSamplesComeFromTheirClockWhereThereIsOne) {
  PROFCTL_REQUIRE_PROFCTL();
  SleepSpin t;
  ASSERT_TRUE(t.start());
  const pid_t pid = t.target.pid();
  TempDir dir;
  RunResult r;
  auto capture =
      run_capture(attach_on_path(pid, "wall", dir.path(), GetParam()), pid, r, dir.path());
  ASSERT_TRUE(capture);
  expect_sleep_spin_wall(*capture, t);
  EXPECT_EQ(profile_of(*capture, "cpu"), nullptr) << "a cpu profile nobody asked for";
  const std::string source = GetParam() == "records"   ? "perf records"
                             : GetParam() == "signals" ? "cpu timer signals"
                                                       : "ticks";
  EXPECT_EQ(capture->value("options", Json()).value("cpu_samples", ""), source);
  // The summary line says where running threads' samples came from.
  EXPECT_NE(r.err.find("running threads sampled from " + source), std::string::npos) << r.err;
  // Stops: the ticks stop the spinner at each of its ~200 ticks; with records only the
  // threads' first samples (a stack to start from) and the sleeper's wake-ups need one.
  const Json& pause = capture->at("pause");
  const long long stops = pause.value("samples", 0LL);
  const Json* wall = profile_of(*capture, "wall");
  ASSERT_NE(wall, nullptr);
  const long long spinner_ticks =
      sum_values(*wall, value_index(*wall, "samples"), tid_is(t.spinner));
  if (GetParam() == "records") {
    EXPECT_LT(stops * 5, spinner_ticks) << "stops " << stops << ", spinner ticks " << spinner_ticks;
  } else if (GetParam() == "ticks") {
    EXPECT_GE(stops * 2, spinner_ticks) << "stops " << stops << ", spinner ticks " << spinner_ticks;
  }
  EXPECT_EQ(t.target.command("ping"), "pong");
}

INSTANTIATE_TEST_SUITE_P(Paths, SamplingWallOnly, ::testing::Values("records", "signals", "ticks"));

// Without perf events, three times as many spinners as CPUs: a tick stops at most as many
// running threads as the target has CPUs, and the others owe the tick to their next stop. Each
// spinner's wall time is still the whole capture, all of it running in spin_loop.
TEST(SamplingTicks, AtMostOneStopPerCpuATickAndEveryThreadsWallAddsUp) {
  PROFCTL_REQUIRE_PROFCTL();
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  const int cpus = CPU_COUNT(&set);
  const int more = std::min(3 * cpus, 48);
  Child target({SAMPLING_SLEEP_SPIN, std::to_string(more)});
  auto ready = target.wait_ready();
  ASSERT_TRUE(ready) << "sampling_sleep_spin did not say ready";
  const pid_t pid = target.pid();
  ASSERT_TRUE(wait_until([&] { return task_ids(pid).size() == static_cast<size_t>(more) + 3; },
                         milliseconds(5000), milliseconds(5)));
  TempDir dir;
  RunResult r;
  auto capture = run_capture(attach_on_path(pid, "wall", dir.path(), "ticks"), pid, r, dir.path());
  ASSERT_TRUE(capture);
  EXPECT_EQ(capture->value("options", Json()).value("cpu_samples", ""), "ticks");
  const Json* wall = profile_of(*capture, "wall");
  ASSERT_NE(wall, nullptr);
  const int wall_ns = value_index(*wall, "wall");
  ASSERT_GE(wall_ns, 0);
  std::map<std::string, long long> per_spinner;
  long long sleeper_wall = 0;
  for (const Json& s : wall->at("samples")) {
    const std::string name = label(s, "thread_name");
    const long long v = s.at("values").at(wall_ns).get<long long>();
    if (name.starts_with("spinner")) {
      per_spinner[label(s, "tid")] += v;
      EXPECT_EQ(label(s, "state"), "running") << s.dump();
      EXPECT_TRUE(has_function(s, "spin_loop")) << s.dump();
    } else if (name == "sleeper") {
      sleeper_wall += v;
    }
  }
  ASSERT_EQ(per_spinner.size(), static_cast<size_t>(more) + 1) << describe_samples(*wall, 40);
  ASSERT_GT(sleeper_wall, 0);
  // Every spinner lived through the capture: its wall time is the sleeper's, give or take what
  // it still owed at the end (flushed then) and a tick at each edge.
  for (const auto& [tid, ns] : per_spinner) {
    EXPECT_NEAR(static_cast<double>(ns), static_cast<double>(sleeper_wall), 0.05 * sleeper_wall)
        << "spinner " << tid;
  }
  // Stops: at most one per CPU per tick, plus each thread's first (a stack to start from) and
  // the sleeper's. Without the budget every spinner that ran was stopped at every tick.
  const double ticks = capture->at("window").value("achieved_hz", 0.0) *
                       capture->at("window").value("duration_s", 0.0);
  const long long stops = capture->at("pause").value("samples", 0LL);
  EXPECT_LE(stops, static_cast<long long>(cpus * ticks) + more + 3 + 10)
      << "stops " << stops << ", ticks " << ticks << ", cpus " << cpus;
  EXPECT_EQ(target.command("ping"), "pong");
}

}  // namespace
}  // namespace profctl::testing::sampling
