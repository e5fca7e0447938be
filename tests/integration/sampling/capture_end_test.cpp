// SPDX-License-Identifier: MIT
// Captures end when they should and say what they wrote: `-d` is a wall-clock deadline even on a
// machine made oversubscribed on purpose, SIGTERM ends a capture and the files are written
// within the bound, and the end-of-capture summary names files that exist.
// Targets: process_tree.c (hog), sampling_sleep_spin.c.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <regex>
#include <thread>

#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

namespace fs = std::filesystem;

// "profctl: wrote N files in DIR: a, b, c" on stderr: every file named exists in DIR, and N
// is their count.
::testing::AssertionResult summary_names_files(const std::string& err, const std::string& dir) {
  static const std::regex wrote(R"(profctl: wrote (\d+) files in ([^:]+): ([^\n]+))");
  std::smatch m;
  if (!std::regex_search(err, m, wrote)) {
    return ::testing::AssertionFailure() << "no 'wrote N files' line in stderr:\n" << err;
  }
  if (m[2] != dir) {
    return ::testing::AssertionFailure() << "the summary names dir " << m[2] << ", not " << dir;
  }
  std::vector<std::string> names;
  std::string list = m[3];
  for (size_t pos = 0; pos <= list.size();) {
    size_t comma = list.find(", ", pos);
    names.push_back(list.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos));
    if (comma == std::string::npos) {
      break;
    }
    pos = comma + 2;
  }
  if (std::to_string(names.size()) != m[1]) {
    return ::testing::AssertionFailure()
           << "the summary says " << m[1] << " files and lists " << names.size();
  }
  for (const auto& n : names) {
    if (!fs::exists(dir + "/" + n)) {
      return ::testing::AssertionFailure()
             << "the summary names " << n << ", which is not in " << dir;
    }
  }
  size_t on_disk = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) {
    ++on_disk;
  }
  if (on_disk != names.size()) {
    return ::testing::AssertionFailure()
           << dir << " has " << on_disk << " files, the summary names " << names.size();
  }
  return ::testing::AssertionSuccess();
}

TEST(CaptureEnd, DeadlineHoldsOnAnOversubscribedMachine) {
  PROFCTL_REQUIRE_PROFCTL();
  // Four CPU hogs per CPU, and a target with 1 hog thread of its own among them.
  const unsigned cpus = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::unique_ptr<Child>> hogs;
  for (unsigned i = 0; i < 4 * cpus; ++i) {
    hogs.push_back(std::make_unique<Child>(std::vector<std::string>{PROCESS_TREE, "hog"}));
  }
  Child target({PROCESS_TREE, "hog"});
  // "hog" says nothing when it is ready: wait until the fork has exec'd it, or profctl may
  // seize the test's own forked child and see the exec as the end of the window (a 38 us
  // window in one quick-start run on a loaded machine).
  const std::string exe = "/proc/" + std::to_string(target.pid()) + "/exe";
  ASSERT_TRUE(wait_until(
      [&] {
        std::error_code ec;
        return fs::read_symlink(exe, ec) == fs::path(PROCESS_TREE);
      },
      milliseconds(30000)))
      << "process_tree hog was never exec'd";
  TempDir dir;
  const auto t0 = std::chrono::steady_clock::now();
  RunResult r = run(attach_argv(target.pid(), {"-d", "2s", "--profiles", "cpu,wall", "-o",
                                               dir.path(), "--format", "json,text"}),
                    RunOptions{milliseconds(120000), std::nullopt});
  const double total_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_FALSE(r.timed_out) << r.describe();
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const double window = capture->at("window").at("duration_s").get<double>();
  // The window is the deadline's: it ends within 100 ms of it, however late the ticks ran.
  EXPECT_GE(window, 2.0);
  EXPECT_LE(window, 2.1) << "a -d 2s capture's window was " << window << " s\n" << r.err;
  // Seizing, modules and writing come on top; a loaded machine makes them slower, not minutes.
  EXPECT_LT(total_s, 30.0) << r.err;
  EXPECT_TRUE(summary_names_files(r.err, dir.path()));
  const Json* cpu = profile_of(*capture, "cpu");
  ASSERT_NE(cpu, nullptr);
  EXPECT_GT(sum_values(*cpu, value_index(*cpu, "cpu"),
                       [](const Json& s) { return has_function(s, "hog"); }),
            0)
      << describe_samples(*cpu);
}

TEST(CaptureEnd, SigtermMidCaptureWritesTheFilesWithinTheBound) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SAMPLING_SLEEP_SPIN});
  ASSERT_TRUE(target.wait_ready()) << "sampling_sleep_spin did not say ready";
  TempDir dir;
  BgProcess p(attach_argv(target.pid(), {"-o", dir.path()}));
  ASSERT_TRUE(wait_traced(target.pid())) << "profctl never attached: " << p.err();
  ASSERT_TRUE(wait_until([&] { return catches(p.pid(), SIGTERM); }, milliseconds(30000)));
  std::this_thread::sleep_for(milliseconds(1000));
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(p.signal(SIGTERM));
  auto st = p.wait_exit(milliseconds(60000));
  const double after_term_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(st) << "profctl did not end after SIGTERM\n" << p.err();
  EXPECT_EQ(exit_code_of(*st), 0) << p.describe_status() << "\n" << p.err();
  // The bound is 1 s plus the time to symbolize what was captured; a one-second capture of a
  // two-thread target symbolizes in well under a second, so 3 s leaves room for a busy CI.
  EXPECT_LT(after_term_s, 3.0) << "SIGTERM to exit: " << after_term_s << " s\n" << p.err();
  EXPECT_TRUE(summary_names_files(p.err(), dir.path()));
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  EXPECT_EQ(tracer_of(target.pid()), 0) << "the target is still traced";
}

}  // namespace
}  // namespace profctl::testing::sampling
