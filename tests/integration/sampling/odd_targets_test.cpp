// SPDX-License-Identifier: MIT
// attach/ under what a tracer finds unusual, each a defect that once hung or froze a target:
// job control while sampling at 999 Hz, thread churn at the final stop, clone(CLONE_VM) children
// that are processes, a main thread that has exited, a thread traced by someone else, and
// signals around a SIGKILL of profctl. Targets: sampling_odd.c, sampling_churn.c, signals.c.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

#include <filesystem>
#include <map>
#include <regex>
#include <sstream>
#include <thread>

#include "sampling_support.h"
#include "support/procfs.h"

namespace profctl::testing::sampling {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

long count_of(Child& target) {
  auto reply = target.command("count");
  if (!reply || reply->rfind("count ", 0) != 0) {
    return -1;
  }
  return std::stol(reply->substr(6));
}

// User CPU time (stat utime, ticks) of every thread of pid, by tid. User time only: the
// kernel-side work of a ptrace-stop (which a thread does even while job-control-stopped)
// counts as system time.
std::map<std::string, long long> run_ns_by_thread(pid_t pid) {
  std::map<std::string, long long> out;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    auto text = read_text(entry.path().string() + "/stat");
    if (!text) {
      continue;
    }
    auto close = text->rfind(')');
    if (close == std::string::npos) {
      continue;
    }
    std::istringstream fields(text->substr(close + 2));
    std::string f;
    long long utime = -1;
    for (int i = 0; fields >> f; ++i) {
      if (i == 11) {  // field 14 of stat: utime
        utime = std::atoll(f.c_str());
        break;
      }
    }
    out[entry.path().filename().string()] = utime;
  }
  return out;
}

// Threads (other than the main thread) whose CPU time did not move over `window`: a spinner
// that does not move is held stopped. Sampling stops threads for microseconds at a time, so
// a look at their /proc state would catch them in 't' legitimately; user CPU time does not
// lie.
std::vector<std::string> spinners_not_running(pid_t pid, milliseconds window) {
  auto before = run_ns_by_thread(pid);
  std::this_thread::sleep_for(window);
  auto after = run_ns_by_thread(pid);
  std::vector<std::string> out;
  for (auto& [tid, ns] : before) {
    if (tid != std::to_string(pid) && after.count(tid) && after[tid] == ns) {
      out.push_back(tid);
    }
  }
  return out;
}

size_t spinners_running(pid_t pid, milliseconds window) {
  auto before = run_ns_by_thread(pid);
  std::this_thread::sleep_for(window);
  auto after = run_ns_by_thread(pid);
  size_t n = 0;
  for (auto& [tid, ns] : before) {
    n += tid != std::to_string(pid) && after.count(tid) && after[tid] > ns ? 1 : 0;
  }
  return n;
}

void end_profctl(BgProcess& p, pid_t target) {
  ASSERT_TRUE(wait_until([&] { return catches(p.pid(), SIGINT); }, milliseconds(30000)));
  ASSERT_TRUE(p.signal(SIGINT));
  auto status = p.wait_exit(milliseconds(30000));
  ASSERT_TRUE(status) << "profctl did not end after SIGINT; target: " << describe_tasks(target);
  EXPECT_EQ(exit_code_of(*status), 0) << p.describe_status() << "\n" << p.err();
}

TEST(AttachOdd, JobControlWhileSamplingAt999HzLeavesNoThreadFrozen) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SAMPLING_ODD, "spin8"});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess profctl_run(
      attach_argv(target.pid(), {"--rate", "999", "--profiles", "cpu,wall", "-o", dir.path()}));
  ASSERT_TRUE(wait_traced(target.pid())) << profctl_run.err();
  // ^Z / fg, many times, as a shell's job control does it.
  for (int i = 0; i < 300; ++i) {
    kill(target.pid(), SIGSTOP);
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    kill(target.pid(), SIGCONT);
    std::this_thread::sleep_for(std::chrono::milliseconds(3));
  }
  // A second after the last SIGCONT every spinner runs again: none is left held in a
  // ptrace-stop.
  std::this_thread::sleep_for(std::chrono::seconds(1));
  auto frozen = spinners_not_running(target.pid(), milliseconds(1000));
  EXPECT_TRUE(frozen.empty()) << frozen.size() << " spinners did not run for a second: "
                              << describe_tasks(target.pid());
  // A stopped target stays stopped (as long as it would without profctl) and runs again on
  // SIGCONT.
  kill(target.pid(), SIGSTOP);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(spinners_running(target.pid(), milliseconds(500)), 0u) << describe_tasks(target.pid());
  kill(target.pid(), SIGCONT);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  frozen = spinners_not_running(target.pid(), milliseconds(1000));
  EXPECT_TRUE(frozen.empty()) << describe_tasks(target.pid());
  end_profctl(profctl_run, target.pid());
  EXPECT_EQ(tracer_of(target.pid()), 0);
}

TEST(AttachOdd, FinalStopOfAChurningTargetIsShort) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SAMPLING_CHURN});
  ASSERT_TRUE(target.wait_ready());
  for (int run_no = 0; run_no < 2; ++run_no) {
    TempDir dir;
    auto r = run({PROFCTL_BIN, "attach", std::to_string(target.pid()), "-d", "2s", "-v",
                  "--profiles", "cpu,wall,threadcreate,threads", "-o", dir.path()});
    EXPECT_EQ(r.exit_code, 0) << r.describe();
    // "world stopped 999.9 ms" was the symptom: the last stop waited out its timeout for a
    // thread that had already exited. Not a timing assertion: anything near the 1 s timeout
    // means a thread was waited for that could never stop.
    std::smatch m;
    std::regex re("world stopped ([0-9.]+) ms");
    ASSERT_TRUE(std::regex_search(r.err, m, re)) << r.err;
    EXPECT_LT(std::stod(m[1]), 500.0) << "the final stop waited for a thread that had exited";
  }
  EXPECT_EQ(target.command("ping"), "pong");
}

TEST(AttachOdd, CloneVmChildrenRunUnhindered) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SAMPLING_ODD, "clonevm"});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess profctl_run(attach_argv(
      target.pid(), {"-d", "3s", "--profiles", "cpu,wall,threads", "-v", "-o", dir.path()}));
  ASSERT_TRUE(wait_traced(target.pid())) << profctl_run.err();
  const long c0 = count_of(target);
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const long c1 = count_of(target);
  // Each child sleeps 2 ms: hundreds in a second when nothing holds them.
  EXPECT_GT(c1 - c0, 50) << "the clone children are held: " << describe_tasks(target.pid());
  auto status = profctl_run.wait_exit(milliseconds(30000));
  ASSERT_TRUE(status);
  EXPECT_EQ(exit_code_of(*status), 0) << profctl_run.err();
  std::smatch m;
  const std::string err = profctl_run.err();
  ASSERT_TRUE(std::regex_search(err, m, std::regex("world stopped ([0-9.]+) ms"))) << err;
  EXPECT_LT(std::stod(m[1]), 500.0);
  EXPECT_GT(count_of(target), c1);
}

TEST(AttachOdd, AProcessWhoseMainThreadExitedIsDumpedAndSampled) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SAMPLING_ODD, "mainexit"});
  ASSERT_TRUE(target.wait_ready());
  const std::string leader_stat =
      "/proc/" + std::to_string(target.pid()) + "/task/" + std::to_string(target.pid()) + "/stat";
  ASSERT_TRUE(wait_until(
      [&] {
        auto st = read_text(leader_stat);
        return st && st->find(") Z") != std::string::npos;
      },
      milliseconds(10000)))
      << describe_tasks(target.pid());
  auto r = run({PROFCTL_BIN, "stack", std::to_string(target.pid())});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("sleeper"), std::string::npos) << r.out;
  TempDir dir;
  auto a = run({PROFCTL_BIN, "attach", std::to_string(target.pid()), "-d", "1s", "--profiles",
                "cpu,wall,threads", "-o", dir.path()});
  EXPECT_EQ(a.exit_code, 0) << a.describe();
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* wall = profile_of(*capture, "wall");
  ASSERT_NE(wall, nullptr);
  bool sleeper_seen = false;
  for (const Json& s : wall->at("samples")) {
    sleeper_seen = sleeper_seen || has_function(s, "sleeper");
  }
  EXPECT_TRUE(sleeper_seen) << describe_samples(*wall);
  EXPECT_GT(count_of(target), 0);
}

TEST(AttachOdd, AThreadTracedBySomeoneElseNamesItsTracer) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SAMPLING_ODD, "mainexit"});
  auto ready = target.wait_ready();
  ASSERT_TRUE(ready);
  // This test process plays strace -p TID: it traces one worker thread only.
  pid_t worker = 0;
  for (const auto& entry :
       fs::directory_iterator("/proc/" + std::to_string(target.pid()) + "/task")) {
    pid_t tid = std::stoi(entry.path().filename().string());
    if (tid != target.pid()) {
      worker = tid;
      break;
    }
  }
  ASSERT_NE(worker, 0);
  ASSERT_EQ(ptrace(PTRACE_SEIZE, worker, nullptr, nullptr), 0) << strerror(errno);
  auto r = run({PROFCTL_BIN, "stack", std::to_string(target.pid())});
  // Detach needs a stopped tracee; until then the worker's exit would wait on this process.
  ptrace(PTRACE_INTERRUPT, worker, nullptr, nullptr);
  int st = 0;
  waitpid(worker, &st, __WALL);
  ptrace(PTRACE_DETACH, worker, nullptr, nullptr);
  EXPECT_EQ(r.exit_code, 2) << r.describe();
  EXPECT_NE(r.err.find("thread " + std::to_string(worker)), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("traced by pid " + std::to_string(getpid())), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("permission denied"), std::string::npos) << r.err;
}

// Queued real-time signals keep arriving while profctl is SIGKILLed again and again mid-capture:
// none may be lost. (A signal profctl had taken from the kernel and not yet re-injected would be.)
TEST(AttachOdd, NoSignalIsLostWhenProfctlIsKilled) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SAMPLING_SIGNALS});
  ASSERT_TRUE(target.wait_ready());
  long sent = 0;
  for (int round = 0; round < 40; ++round) {
    BgProcess p(attach_argv(target.pid(), {"--rate", "999", "--profiles", "cpu,wall"}));
    ASSERT_TRUE(wait_traced(target.pid())) << p.err();
    const auto until = Clock::now() + std::chrono::milliseconds(20 + (round * 7) % 40);
    while (Clock::now() < until) {
      union sigval v = {};
      if (::sigqueue(target.pid(), SIGRTMIN, v) == 0) {
        ++sent;
      }
    }
    p.signal(SIGKILL);
    ASSERT_TRUE(p.wait_exit(milliseconds(10000)));
    ASSERT_TRUE(wait_untraced(target.pid()));
  }
  long rt = -1;
  ASSERT_TRUE(wait_until(
      [&] {
        auto reply = target.command("count");
        if (!reply) {
          return false;
        }
        rt = std::stol(parse_key_values(*reply)["rt"]);
        return rt >= sent;
      },
      milliseconds(10000)));
  EXPECT_EQ(rt, sent) << "real-time signals lost across 40 SIGKILLs of profctl";
}

}  // namespace
}  // namespace profctl::testing::sampling
