// SPDX-License-Identifier: MIT
// `profctl stack` on things it cannot or must not attach: exit 2 (1 for usage), exactly one line on
// stderr, nothing on stdout, and the target exactly as it was.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <regex>
#include <thread>

#include "support/capture.h"
#include "support/procfs.h"

namespace profctl::testing {
namespace {

::testing::AssertionResult one_error_line(const RunResult& r) {
  if (!r.out.empty()) {
    return ::testing::AssertionFailure() << "stdout not empty: " << r.describe();
  }
  if (r.err.empty() || r.err.back() != '\n' || r.err.find('\n') != r.err.size() - 1) {
    return ::testing::AssertionFailure() << "stderr is not exactly one line: " << r.describe();
  }
  return ::testing::AssertionSuccess();
}

void expect_exit(const RunResult& r, int code) {
  EXPECT_FALSE(r.timed_out) << r.describe();
  EXPECT_EQ(r.exit_code, code) << r.describe();
  EXPECT_TRUE(one_error_line(r));
}

TEST(StackErrors, NoSuchProcess) {
  PROFCTL_REQUIRE_PROFCTL();
  // A pid that just existed and is gone: fork a child and reap it.
  pid_t pid = ::fork();
  if (pid == 0) {
    ::_exit(0);
  }
  ASSERT_GT(pid, 0);
  int status;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_NE(::kill(pid, 0), 0) << "pid reused already";
  expect_exit(profctl_stack(pid), 2);
}

TEST(StackErrors, KernelThread) {
  PROFCTL_REQUIRE_PROFCTL();
  auto flags = process_flags(2);
  if (!flags || !(*flags & 0x00200000)) {  // PF_KTHREAD
    GTEST_SKIP() << "pid 2 is not a kernel thread here (pid namespace?)";
  }
  expect_exit(profctl_stack(2), 2);
  EXPECT_NE(task_state(2, 2), 't');
  EXPECT_EQ(tracer_pid(2, 2), 0);
}

TEST(StackErrors, Zombie) {
  PROFCTL_REQUIRE_PROFCTL();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::_exit(7);
  }
  ASSERT_GT(pid, 0);
  struct Reaper {  // reaps the zombie by pid whatever happens
    pid_t pid;
    ~Reaper() {
      int s;
      ::waitpid(pid, &s, 0);
    }
  } reaper{pid};
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (process_state(pid) != 'Z' && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(process_state(pid), 'Z');
  expect_exit(profctl_stack(pid), 2);
  EXPECT_EQ(process_state(pid), 'Z');
  // Still ours to reap, with its own exit status.
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, WNOHANG), pid);
  reaper.pid = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 7);
}

// Another process traces the target (PTRACE_SEIZE, the target keeps running): exit 2, the message
// names the tracer's pid, and the tracer keeps its tracee.
TEST(StackErrors, AlreadyTracedNamesTheTracer) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({TARGET_STACK_CFI});
  ASSERT_TRUE(target.wait_ready());
  int report[2];
  ASSERT_EQ(::pipe2(report, O_CLOEXEC), 0);
  const pid_t target_pid = target.pid();
  pid_t tracer = ::fork();
  if (tracer == 0) {
    // Async-signal-safe only. Seize, report, then wait to be killed.
    char ok = ::ptrace(PTRACE_SEIZE, target_pid, nullptr, nullptr) == 0 ? 'y' : 'n';
    if (::write(report[1], &ok, 1) != 1) {
      ::_exit(1);
    }
    for (;;) {
      ::pause();
    }
  }
  ASSERT_GT(tracer, 0);
  ::close(report[1]);
  struct Killer {  // kills and reaps the tracer by pid; the kernel then detaches its tracee
    pid_t pid;
    ~Killer() {
      ::kill(pid, SIGKILL);
      int s;
      ::waitpid(pid, &s, 0);
    }
  } killer{tracer};
  char ok = 0;
  ASSERT_EQ(::read(report[0], &ok, 1), 1);
  ::close(report[0]);
  ASSERT_EQ(ok, 'y') << "helper could not PTRACE_SEIZE the target";
  ASSERT_EQ(tracer_pid(target_pid, target_pid), tracer);

  RunResult r = profctl_stack(target_pid, {"--format", "json"});
  expect_exit(r, 2);
  std::regex tracer_re("(^|[^0-9])" + std::to_string(tracer) + "([^0-9]|$)");
  EXPECT_TRUE(std::regex_search(r.err, tracer_re))
      << "message does not name tracer pid " << tracer << ": " << r.err;
  // Untouched: the main thread is still traced by our helper only, the rest by nobody, and
  // nothing is stopped.
  EXPECT_EQ(tracer_pid(target_pid, target_pid), tracer);
  for (pid_t tid : task_ids(target_pid)) {
    char state = task_state(target_pid, tid);
    EXPECT_TRUE(state != 't' && state != 'T') << "tid " << tid << " state " << state;
    if (tid != target_pid) {
      EXPECT_EQ(tracer_pid(target_pid, tid), 0) << "tid " << tid;
    }
  }
  EXPECT_EQ(target.command("ping"), "pong");
}

// Not allowed to trace (another user's process): exit 2, target untouched.
TEST(StackErrors, PermissionDenied) {
  PROFCTL_REQUIRE_PROFCTL();
  if (::geteuid() != 0) {
    GTEST_SKIP() << "needs root to run profctl as another user";
  }
  Child target({TARGET_STACK_CFI});
  ASSERT_TRUE(target.wait_ready());
  RunOptions options;
  options.uid = 65534;  // nobody
  options.timeout = milliseconds(60000);
  RunResult r = profctl({"stack", std::to_string(target.pid())}, options);
  if (r.exit_code == 126 || r.exit_code == 127) {
    GTEST_SKIP() << "cannot run profctl as nobody here: " << r.describe();
  }
  expect_exit(r, 2);
  EXPECT_TRUE(untouched(target.pid()));
  EXPECT_EQ(target.command("ping"), "pong");
}

// Usage errors exit 1 and leave a live target alone.
TEST(StackErrors, BadUsage) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({TARGET_STACK_CFI});
  ASSERT_TRUE(target.wait_ready());
  const std::string pid = std::to_string(target.pid());
  const std::vector<std::vector<std::string>> cases = {
      {"stack"},
      {"stack", "abc"},
      {"stack", "12abc"},
      {"stack", pid, "--bogus-option"},
      {"stack", pid, "--format", "yaml"},
      {"stack", pid, "--tid", "notanumber"},
      {"stack", pid, pid},
  };
  for (const auto& args : cases) {
    std::string shown;
    for (const auto& a : args) {
      shown += " " + a;
    }
    SCOPED_TRACE("profctl" + shown);
    RunOptions options;
    options.timeout = milliseconds(30000);
    expect_exit(profctl(args, options), 1);
    EXPECT_TRUE(untouched(target.pid()));
  }
  EXPECT_EQ(target.command("ping"), "pong");
}

std::string joined(const std::vector<std::string>& args) {
  std::string s = "profctl";
  for (const auto& a : args) {
    s += " '" + a + "'";
  }
  return s;
}

// A directory under /tmp, removed with everything in it at the end of the test.
class ScratchDir {
 public:
  ScratchDir() {
    char tmpl[] = "/tmp/profctl-errors-XXXXXX";
    const char* made = ::mkdtemp(tmpl);
    path_ = made != nullptr ? made : "";
  }
  ~ScratchDir() {
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::permissions(path_, std::filesystem::perms::owner_all, ec);
      std::filesystem::remove_all(path_, ec);
    }
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::trunc);
  f << text;
  f.close();
  return static_cast<bool>(f);
}

// The smallest capture `report` renders: one cpu profile with one sample.
const char* const kMinimalCapture = R"({"schema": "profctl.capture/1",
  "target": {"pid": 1, "exe": "/x", "cmdline": []},
  "window": {"start": "2026-11-24T10:00:00Z", "duration_s": 1},
  "threads": [],
  "profiles": {"cpu": {"sample_types": [{"type": "samples", "unit": "count"}],
                       "samples": [{"values": [3], "frames": []}]}}})";

// Nonsense option values (NaN, a negative size, a duration of 1e300ms or 1e-12 s or "")
// are usage errors: exit 1, one line that names the valid range, and the target untouched.
// Before, most of them started a capture (`-d ""` ran until interrupted).
TEST(OptionErrors, ValuesOutOfRangeAreUsageErrorsNamingTheRange) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({TARGET_STACK_CFI});
  ASSERT_TRUE(target.wait_ready());
  const std::string pid = std::to_string(target.pid());
  const std::string rate = "from 0.1 to 10000";
  const std::string duration = "from 1ms to 30 days";
  const std::string bytes = "from 64 bytes to 1G";
  const std::string top = "from 1 to 1000000";
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"attach", pid, "--rate", "nan"}, rate},
      {{"attach", pid, "--rate", "inf"}, rate},
      {{"attach", pid, "--rate", "0"}, rate},
      {{"attach", pid, "--rate", "1e5"}, rate},
      {{"attach", pid, "-d", "1e300ms"}, duration},
      {{"attach", pid, "-d", "1e-12"}, duration},
      {{"attach", pid, "-d", ""}, duration},
      {{"attach", pid, "-d", "-5s"}, duration},
      {{"attach", pid, "-d", "nan"}, duration},
      {{"attach", pid, "-d", "31d"}, duration},
      {{"attach", pid, "--stack-bytes", "-1"}, bytes},
      {{"attach", pid, "--stack-bytes", "2G"}, bytes},
      {{"attach", pid, "--top", "-1"}, top},
      {{"attach", pid, "--top", "0"}, top},
      {{"run", "--rate", "nan", "--", "/bin/true"}, rate},
      {{"run", "-d", "1e-12", "--", "/bin/true"}, duration},
      {{"run", "--stack-bytes", "-1", "--", "/bin/true"}, bytes},
      {{"run", "--top", "-1", "--", "/bin/true"}, top},
      {{"stack", pid, "--stack-bytes", "-1"}, bytes},
      {{"stack", pid, "--stack-bytes", "32"}, bytes},
      {{"stack", pid, "--stack-bytes", "18446744073709551615K"}, bytes},
      {{"report", "capture.json", "--top", "-1"}, top},
      {{"report", "capture.json", "--top", "0"}, top},
  };
  for (const auto& [args, range] : cases) {
    SCOPED_TRACE(joined(args));
    RunOptions options;
    options.timeout = milliseconds(20000);
    const RunResult r = profctl(args, options);
    expect_exit(r, 1);
    EXPECT_NE(r.err.find(range), std::string::npos)
        << "the message does not give the range '" << range << "': " << r.describe();
    EXPECT_TRUE(untouched(target.pid()));
  }
  EXPECT_EQ(target.command("ping"), "pong");
}

// Values at the ends of the ranges are accepted.
TEST(OptionErrors, ValuesAtTheEndsOfTheRangesAreAccepted) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({TARGET_STACK_CFI});
  ASSERT_TRUE(target.wait_ready());
  const std::string pid = std::to_string(target.pid());
  RunOptions options;
  options.timeout = milliseconds(60000);
  RunResult r = profctl({"attach", pid, "-d", "1ms", "--rate", "10000", "--stack-bytes", "64",
                         "--top", "1", "--profiles", "cpu"},
                        options);
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  r = profctl({"stack", pid, "--stack-bytes", "1G"}, options);
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(untouched(target.pid()));
}

// `-o` at an existing regular file: exit 1 at once, naming the path and the errno, before the
// target is traced (the capture would last 60 s: a timeout of 20 s tells that it did not run).
TEST(OutputErrors, OutputAtARegularFileFailsBeforeAttaching) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({TARGET_STACK_CFI});
  ASSERT_TRUE(target.wait_ready());
  ScratchDir scratch;
  ASSERT_FALSE(scratch.path().empty());
  const std::string file = scratch.file("a-file");
  ASSERT_TRUE(write_file(file, "x"));
  const std::string capture = scratch.file("capture.json");
  ASSERT_TRUE(write_file(capture, kMinimalCapture));
  const std::string pid = std::to_string(target.pid());
  const std::vector<std::vector<std::string>> cases = {
      {"attach", pid, "-d", "60s", "-o", file},
      {"attach", pid, "-d", "60s", "-o", file + "/sub"},
      {"run", "-d", "60s", "-o", file, "--", TARGET_STACK_CFI},
      {"report", capture, "-o", file},
      {"stack", pid, "-o", scratch.path()},  // stack -o takes a FILE: a directory fails
  };
  for (const auto& args : cases) {
    SCOPED_TRACE(joined(args));
    RunOptions options;
    options.timeout = milliseconds(20000);
    const RunResult r = profctl(args, options);
    expect_exit(r, 1);
    EXPECT_TRUE(r.err.find("Not a directory") != std::string::npos ||
                r.err.find("Is a directory") != std::string::npos)
        << "no errno in the message: " << r.describe();
    EXPECT_NE(r.err.find(args[0] == "stack" ? scratch.path() : file), std::string::npos)
        << "the message does not name the path: " << r.describe();
    EXPECT_EQ(tracer_pid(target.pid(), target.pid()), 0);
    EXPECT_TRUE(untouched(target.pid()));
  }
  std::ifstream still(file);
  std::string content;
  std::getline(still, content);
  EXPECT_EQ(content, "x") << "the regular file was changed";
  EXPECT_EQ(target.command("ping"), "pong");
}

// `-o` where nothing can be written. As root, permission bits do not stop a write, so the
// place is one no one can write to: /sys (mkdir there is EPERM, or EROFS where /sys is
// mounted read-only). As another user, a directory of mode 0555.
TEST(OutputErrors, OutputInAPlaceThatCannotBeWrittenFailsBeforeAttaching) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({TARGET_STACK_CFI});
  ASSERT_TRUE(target.wait_ready());
  ScratchDir scratch;
  ASSERT_FALSE(scratch.path().empty());
  std::string dir;
  if (::geteuid() == 0) {
    dir = "/sys/profctl-test-output";
    if (::mkdir(dir.c_str(), 0755) == 0) {
      ::rmdir(dir.c_str());
      GTEST_SKIP() << "/sys is writable here";
    }
  } else {
    const std::string ro = scratch.file("read-only");
    ASSERT_EQ(::mkdir(ro.c_str(), 0555), 0);
    dir = ro + "/out";
  }
  const std::string capture = scratch.file("capture.json");
  ASSERT_TRUE(write_file(capture, kMinimalCapture));
  const std::string pid = std::to_string(target.pid());
  const std::vector<std::vector<std::string>> cases = {
      {"attach", pid, "-d", "60s", "-o", dir},
      {"report", capture, "-o", dir},
      {"stack", pid, "-o", dir + "/stacks.txt"},
  };
  for (const auto& args : cases) {
    SCOPED_TRACE(joined(args));
    RunOptions options;
    options.timeout = milliseconds(20000);
    const RunResult r = profctl(args, options);
    expect_exit(r, 1);
    EXPECT_NE(r.err.find(dir), std::string::npos) << "the path is not named: " << r.describe();
    EXPECT_TRUE(r.err.find("ermi") != std::string::npos ||  // "Operation not permitted" etc.
                r.err.find("Read-only") != std::string::npos ||
                r.err.find("No such file") != std::string::npos)
        << "no errno in the message: " << r.describe();
    EXPECT_EQ(tracer_pid(target.pid(), target.pid()), 0);
    EXPECT_TRUE(untouched(target.pid()));
  }
  EXPECT_EQ(target.command("ping"), "pong");
}

// Results written to a full stdout are lost: that is an error (exit 1, the errno said), never
// a silent exit 0.
TEST(OutputErrors, AFullStdoutIsAnError) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({TARGET_STACK_CFI});
  ASSERT_TRUE(target.wait_ready());
  ScratchDir scratch;
  ASSERT_FALSE(scratch.path().empty());
  const std::string capture = scratch.file("capture.json");
  ASSERT_TRUE(write_file(capture, kMinimalCapture));
  const std::string pid = std::to_string(target.pid());
  const std::vector<std::string> commands = {
      "attach " + pid + " -d 200ms --profiles cpu,threads",
      "stack " + pid,
      "stack " + pid + " --format json",
      "report " + capture,
  };
  for (const auto& command : commands) {
    SCOPED_TRACE(command);
    RunOptions options;
    options.timeout = milliseconds(30000);
    const RunResult r =
        run({"/bin/sh", "-c", "exec \"$0\" " + command + " >/dev/full", profctl_path()}, options);
    EXPECT_FALSE(r.timed_out) << r.describe();
    EXPECT_EQ(r.exit_code, 1) << r.describe();
    EXPECT_NE(r.err.find("standard output"), std::string::npos) << r.describe();
    EXPECT_NE(r.err.find("No space left on device"), std::string::npos) << r.describe();
    EXPECT_TRUE(untouched(target.pid()));
  }
  EXPECT_EQ(target.command("ping"), "pong");
}

}  // namespace
}  // namespace profctl::testing
