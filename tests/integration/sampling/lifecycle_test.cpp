// SPDX-License-Identifier: MIT
// How a capture ends: `profctl run` returns the program's exit status (128+N when a signal killed
// it) and forwards SIGTERM; `profctl attach` ends with exit 3 and a warning when the target exits,
// and with exit 0 on SIGINT, leaving the target running untraced. Files are written every time.
// Targets: sampling_run_modes.c, sampling_sleep_spin.c.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <thread>

#include "sampling_support.h"
#include "support/procfs.h"

namespace profctl::testing::sampling {
namespace {

namespace fs = std::filesystem;

// capture.json and, for each profile in it, its .pb.gz/.txt/.folded/.html: what `-o DIR` writes
// with the default --format all.
::testing::AssertionResult files_written(const std::string& dir,
                                         const std::vector<std::string>& kinds) {
  if (!fs::exists(dir + "/capture.json")) {
    return ::testing::AssertionFailure() << dir << "/capture.json missing";
  }
  for (const auto& kind : kinds) {
    for (const char* ext : {".pb.gz", ".txt", ".folded", ".html"}) {
      if (!fs::exists(dir + "/" + kind + ext)) {
        return ::testing::AssertionFailure() << dir << "/" << kind << ext << " missing";
      }
    }
  }
  return ::testing::AssertionSuccess();
}

bool has_warning(const Json& capture, const std::string& part) {
  for (const Json& w : capture.value("warnings", Json::array())) {
    if (w.is_string() && w.get<std::string>().find(part) != std::string::npos) {
      return true;
    }
  }
  return false;
}

struct RunCase {
  const char* name;
  std::vector<std::string> args;
  int exit_code;
};

void PrintTo(const RunCase& c, std::ostream* os) { *os << c.name; }

// The profiles of a `profctl run` of sampling_run_modes are not empty: work() spent 100 ms of
// CPU on the main thread, and its samples have the whole stack, work up to _start. (Exit status
// and files alone would pass with empty profiles.)
::testing::AssertionResult work_was_profiled(const std::string& dir) {
  auto capture = load_capture(dir);
  if (!capture) {
    return ::testing::AssertionFailure() << "no capture.json";
  }
  const Json* cpu = profile_of(*capture, "cpu");
  const Json* wall = profile_of(*capture, "wall");
  if (cpu == nullptr || wall == nullptr) {
    return ::testing::AssertionFailure() << "cpu or wall profile missing";
  }
  if (sum_values(*wall, value_index(*wall, "samples")) <= 0) {
    return ::testing::AssertionFailure() << "the wall profile is empty";
  }
  const std::vector<std::string> work = then({"work"}, main_root());
  const long long in_work = sum_values(*cpu, value_index(*cpu, "cpu"), [&](const Json& s) {
    return has_function(s, "work") && stack_ends_with(s, work);
  });
  // 100 ms of CPU, charged at the samples: at least half of it lands in full work() stacks.
  if (in_work < 50'000'000) {
    ::testing::AssertionResult why = ::testing::AssertionFailure();
    why << "cpu ns in full work() < main < ... < _start stacks: " << in_work
        << " (expected >= 50 ms of the 100 ms work() used)\n"
        << describe_samples(*cpu);
    for (const Json& s : cpu->at("samples")) {
      if (has_function(s, "work")) {
        why << stack_ends_with(s, work).message() << "\n";
        break;
      }
    }
    return why;
  }
  return ::testing::AssertionSuccess();
}

class SamplingRunExitStatus : public ::testing::TestWithParam<RunCase> {};

TEST_P(SamplingRunExitStatus, IsTheProgramsAndFilesAreWritten) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  std::vector<std::string> command = {SAMPLING_RUN_MODES};
  command.insert(command.end(), GetParam().args.begin(), GetParam().args.end());
  RunResult r = run(run_argv({"--profiles", "cpu,wall", "-o", dir.path()}, command));
  ASSERT_FALSE(r.timed_out) << r.describe();
  EXPECT_EQ(r.term_signal, 0) << r.describe();
  EXPECT_EQ(r.exit_code, GetParam().exit_code) << r.describe();
  EXPECT_TRUE(files_written(dir.path(), {"cpu", "wall"}));
  EXPECT_TRUE(outputs_valid(dir.path(), {{"cpu", {"work", "main"}}}));
  EXPECT_TRUE(work_was_profiled(dir.path()));
}

INSTANTIATE_TEST_SUITE_P(Modes, SamplingRunExitStatus,
                         ::testing::Values(RunCase{"Exit7", {"exit", "7"}, 7},
                                           RunCase{"Exit0", {"exit", "0"}, 0},
                                           RunCase{"Abort", {"abort"}, 128 + SIGABRT}),
                         [](const auto& info) { return std::string(info.param.name); });

// `kill -TERM <profctl>` during `profctl run`: the program gets the SIGTERM.
void term_during_run(const std::string& mode, int expected_exit, bool expect_got_term) {
  TempDir dir;
  BgProcess profctl_run(
      run_argv({"--profiles", "cpu,wall", "-o", dir.path()}, {SAMPLING_RUN_MODES, mode}));
  auto ready = profctl_run.read_until("ready");
  ASSERT_TRUE(ready) << "the program never said ready under profctl run\n" << profctl_run.err();
  ASSERT_TRUE(profctl_run.signal(SIGTERM));
  auto status = profctl_run.wait_exit(milliseconds(60000));
  ASSERT_TRUE(status) << "profctl run did not end within 60 s of SIGTERM\n" << profctl_run.err();
  if (expect_got_term) {
    auto line = profctl_run.read_until("got TERM", milliseconds(5000));
    EXPECT_TRUE(line) << "the program did not see the SIGTERM sent to profctl; its output:\n"
                      << profctl_run.seen_out();
  }
  EXPECT_EQ(exit_code_of(*status), expected_exit) << profctl_run.describe_status() << "\n"
                                                  << profctl_run.err();
  EXPECT_TRUE(files_written(dir.path(), {"cpu", "wall"}));
  EXPECT_TRUE(outputs_valid(dir.path(), {{"cpu", {"work", "main"}}}));
  EXPECT_TRUE(work_was_profiled(dir.path()));
}

TEST(SamplingRun, SigtermToProfctlIsForwardedToTheProgramThatHandlesIt) {
  PROFCTL_REQUIRE_PROFCTL();
  term_during_run("term", 0, true);
}

TEST(SamplingRun, SigtermToProfctlKillsAProgramWithTheDefaultAction) {
  PROFCTL_REQUIRE_PROFCTL();
  term_during_run("term-default", 128 + SIGTERM, false);
}

TEST(SamplingAttach, TargetExitingMidCaptureGivesExit3AWarningAndTheProfiles) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SAMPLING_SLEEP_SPIN});
  ASSERT_TRUE(target.wait_ready()) << "sampling_sleep_spin did not say ready";
  TempDir dir;
  BgProcess profctl_run(attach_argv(target.pid(), {"-d", "10s", "-o", dir.path()}));
  ASSERT_TRUE(wait_traced(target.pid())) << "profctl never attached: " << profctl_run.err();
  // The target spins for 1 s in exit_countdown(), then calls exit(0).
  ASSERT_EQ(target.command("exit-after 1000"), "ok");
  auto status = profctl_run.wait_exit(milliseconds(60000));
  ASSERT_TRUE(status) << "profctl attach did not end after the target exited\n"
                      << profctl_run.err();
  EXPECT_EQ(exit_code_of(*status), 3) << profctl_run.describe_status() << "\n" << profctl_run.err();

  // The target's own exit status reaches its parent (us) unchanged.
  ASSERT_TRUE(wait_until([&] { return !target.alive(); }, milliseconds(30000)));
  ASSERT_TRUE(target.wait_status());
  EXPECT_TRUE(WIFEXITED(*target.wait_status()) && WEXITSTATUS(*target.wait_status()) == 0)
      << "target wait status " << *target.wait_status();

  EXPECT_TRUE(files_written(dir.path(), {"cpu", "wall", "threadcreate"}));
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  EXPECT_TRUE(has_warning(*capture, "exited"))
      << "no warning says the target exited: " << capture->value("warnings", Json()).dump();
  for (const char* kind : {"cpu", "wall"}) {
    const Json* p = profile_of(*capture, kind);
    ASSERT_NE(p, nullptr) << kind;
    EXPECT_GT(sum_values(*p, value_index(*p, "samples")), 0) << kind << " profile is empty";
  }
  // Symbolized although the target is gone by the time the reports are written.
  EXPECT_FALSE(capture->value("modules", Json::array()).empty())
      << "capture.json has no modules after the target exited: no frame is symbolized";
  // The main thread spun in exit_countdown() for 1 s while traced.
  const Json* cpu = profile_of(*capture, "cpu");
  EXPECT_GT(sum_values(*cpu, value_index(*cpu, "samples"),
                       [](const Json& s) { return has_function(s, "exit_countdown"); }),
            0)
      << describe_samples(*cpu);
  EXPECT_TRUE(outputs_valid(dir.path(), {{"cpu", {"spin_loop", "exit_countdown"}}}));
}

long spin_count(Child& target) {
  auto reply = target.command("count");
  if (!reply || reply->rfind("count ", 0) != 0) {
    return -1;
  }
  return std::stol(reply->substr(6));
}

// SIGINT ends an open-ended capture: exit 0, files, and the target untraced and still running.
void sigint_ends_capture(bool wait_for_progress) {
  Child target({SAMPLING_SLEEP_SPIN});
  ASSERT_TRUE(target.wait_ready()) << "sampling_sleep_spin did not say ready";
  TempDir dir;
  BgProcess profctl_run(attach_argv(target.pid(), {"-o", dir.path()}));
  ASSERT_TRUE(wait_traced(target.pid())) << "profctl never attached: " << profctl_run.err();
  if (wait_for_progress) {
    // Mid-capture: profctl has its SIGINT handler, and the target keeps running while traced.
    ASSERT_TRUE(wait_until([&] { return catches(profctl_run.pid(), SIGINT); }, milliseconds(30000)))
        << "profctl never installed a SIGINT handler";
    const long before = spin_count(target);
    ASSERT_GE(before, 0);
    ASSERT_TRUE(wait_until([&] { return spin_count(target) > before + 1000; }, milliseconds(30000)))
        << "the spinner makes no progress while traced";
    // A capture window of 30 ticks at 99 Hz (not a wait for readiness): the cpu profile must
    // have the spinner, whole stack, below.
    std::this_thread::sleep_for(milliseconds(300));
  }
  const bool had_handler = catches(profctl_run.pid(), SIGINT);
  ASSERT_TRUE(profctl_run.signal(SIGINT));
  auto status = profctl_run.wait_exit(milliseconds(60000));
  ASSERT_TRUE(status) << "profctl attach did not end within 60 s of SIGINT\n" << profctl_run.err();
  EXPECT_EQ(exit_code_of(*status), 0)
      << profctl_run.describe_status() << " on SIGINT sent once the target was traced; profctl "
      << (had_handler ? "had" : "had no") << " SIGINT handler then (/proc/PID/status SigCgt)\n"
      << profctl_run.err();
  EXPECT_TRUE(files_written(dir.path(), {"cpu", "wall", "threadcreate", "threads"}));
  EXPECT_TRUE(fs::exists(dir.path() + "/stacks.txt"));
  EXPECT_TRUE(outputs_valid(dir.path()));
  if (wait_for_progress) {
    // The spinner ran while traced: the cpu profile has it, with its whole stack.
    auto capture = load_capture(dir.path());
    ASSERT_TRUE(capture);
    const Json* cpu = profile_of(*capture, "cpu");
    ASSERT_NE(cpu, nullptr);
    const std::vector<std::string> spin = then({"spin_loop", "spinner_main"}, thread_root());
    EXPECT_GT(sum_values(*cpu, value_index(*cpu, "samples"),
                         [&](const Json& s) { return bool(stack_ends_with(s, spin)); }),
              0)
        << describe_samples(*cpu);
  }

  // Untraced, no thread stopped, and every thread still where it was; the spinner keeps going.
  EXPECT_TRUE(untouched(target.pid()));
  for (pid_t tid : task_ids(target.pid())) {
    char state = task_state(target.pid(), tid);
    EXPECT_TRUE(state == 'R' || state == 'S') << "tid " << tid << " state " << state;
  }
  const long after = spin_count(target);
  ASSERT_GE(after, 0) << "the target does not answer after the capture";
  EXPECT_TRUE(wait_until([&] { return spin_count(target) > after; }, milliseconds(30000)))
      << "the spinner stopped making progress after the capture";
  EXPECT_EQ(target.command("ping"), "pong");
}

TEST(SamplingAttach, SigintMidCaptureWritesFilesExits0AndLeavesTheTargetRunning) {
  PROFCTL_REQUIRE_PROFCTL();
  sigint_ends_capture(/*wait_for_progress=*/true);
}

TEST(SamplingAttach, SigintRightAfterTheSeizeIsHandledTheSameWay) {
  PROFCTL_REQUIRE_PROFCTL();
  sigint_ends_capture(/*wait_for_progress=*/false);
}

}  // namespace
}  // namespace profctl::testing::sampling
