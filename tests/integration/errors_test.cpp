// `profctl stack` on things it cannot or must not attach: exit 2 (1 for usage), exactly one line on
// stderr, nothing on stdout, and the target exactly as it was.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <unistd.h>

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

}  // namespace
}  // namespace profctl::testing
