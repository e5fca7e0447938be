// SPDX-License-Identifier: MIT
// `profctl stack` under load: 500 threads, threads created and joined constantly, and a stream of
// signals that must all arrive exactly once.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "support/capture.h"
#include "support/procfs.h"

namespace profctl::testing {
namespace {

// many_threads 500: all 501 threads, each with its complete stack (tests/targets/many_threads.c).
TEST(ManyThreads, AllFiveHundredThreadsWithCompleteStacks) {
  PROFCTL_REQUIRE_PROFCTL();
  constexpr int kThreads = 500;
  Child child({TARGET_MANY_THREADS, std::to_string(kThreads)});
  ASSERT_EQ(child.wait_ready(), "ready " + std::to_string(kThreads));

  RunResult r = profctl_stack(child.pid(), {"--format", "json"}, milliseconds(90000));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(untouched(child.pid()));
  EXPECT_EQ(child.command("ping"), "pong");
  auto capture = parse_capture(r.out, child.pid());
  ASSERT_TRUE(capture);
  const Json& threads = (*capture)["threads"];
  ASSERT_EQ(threads.size(), static_cast<size_t>(kThreads + 1));

  auto tasks = task_ids(child.pid());
  std::set<pid_t> dumped;
  std::set<std::string> names;
  const std::vector<Step> worker =
      concat({{lib_run("pause"), exe("many_block"), exe("many_thread_main")}, thread_tail()});
  int bad = 0;
  for (const Json& t : threads) {
    pid_t tid = t["tid"].get<pid_t>();
    dumped.insert(tid);
    if (tid == child.pid()) {
      continue;
    }
    names.insert(t["name"].get<std::string>());
    EXPECT_EQ(t["state"], "S") << "tid " << tid;
    EXPECT_EQ(t.value("wait_syscall", Json()), "pause") << "tid " << tid;
    auto match = stack_matches(t, TARGET_MANY_THREADS, worker);
    if (!match && ++bad <= 3) {  // show the first few only
      ADD_FAILURE() << match.message();
    }
  }
  EXPECT_EQ(bad, 0) << "workers with a wrong stack";
  EXPECT_EQ(dumped, std::set<pid_t>(tasks.begin(), tasks.end()));
  EXPECT_EQ(names.size(), static_cast<size_t>(kThreads));
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_TRUE(names.count("worker-" + std::to_string(i))) << "worker-" << i;
  }
  const Json* main_thread = thread_by_tid(*capture, child.pid());
  ASSERT_NE(main_thread, nullptr);
  std::string stack = describe_frames(*main_thread);
  EXPECT_NE(stack.find("!many_command_loop"), std::string::npos) << stack;
  EXPECT_EQ(main_thread->at("frames").back()["function"], "_start") << stack;
}

// Returns the N of "count N".
long churn_count(Child& child) {
  auto reply = child.command("count");
  if (!reply || reply->rfind("count ", 0) != 0) {
    ADD_FAILURE() << "bad reply to count: " << reply.value_or("<none>");
    return -1;
  }
  return std::stol(reply->substr(6));
}

// Threads appear and exit during every stop: every run succeeds, none hangs, and the target keeps
// running, untraced, afterwards.
TEST(Churn, RepeatedDumpsWhileThreadsComeAndGo) {
  PROFCTL_REQUIRE_PROFCTL();
  Child child({TARGET_CHURN, "2"});
  auto ready = child.wait_ready();
  ASSERT_TRUE(ready);
  std::vector<pid_t> churners;
  {
    std::istringstream list(parse_key_values(*ready)["churners"]);
    for (std::string tid; std::getline(list, tid, ',');) {
      churners.push_back(static_cast<pid_t>(std::stol(tid)));
    }
  }
  ASSERT_EQ(churners.size(), 2u) << *ready;
  constexpr int kRuns = 30;
  for (int i = 0; i < kRuns; ++i) {
    SCOPED_TRACE("run " + std::to_string(i));
    RunResult r = profctl_stack(child.pid(), {"--format", "json"}, milliseconds(20000));
    ASSERT_FALSE(r.timed_out) << r.describe();
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    ASSERT_TRUE(child.alive()) << "target died, wait status " << child.wait_status().value_or(-1);
    EXPECT_TRUE(untouched(child.pid()));
    auto capture = parse_capture(r.out, child.pid());
    ASSERT_TRUE(capture);
    const Json* main_thread = thread_by_tid(*capture, child.pid());
    ASSERT_NE(main_thread, nullptr);
    EXPECT_NE(describe_frames(*main_thread).find("!churn_command_loop"), std::string::npos)
        << describe_frames(*main_thread);
    for (pid_t tid : churners) {
      const Json* t = thread_by_tid(*capture, tid);
      ASSERT_NE(t, nullptr) << "churner " << tid << " missing";
      EXPECT_EQ((*t)["name"], "churner");
      // Every churner's whole stack, every time. A churner stopped inside the clone3 syscall
      // is unwound too: glibc's clone3.S ends its CFI before `syscall`, and unwind/ retries
      // from the entry state ([rsp] = return address). Accepting a one-frame clone stack
      // here would hide a regression of that retry.
      EXPECT_TRUE(stack_matches(*t, TARGET_CHURN,
                                concat({{lib_run(""), exe("churner_main")}, thread_tail()})));
    }
  }
  // Still making progress.
  long before = churn_count(child);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  long after = before;
  while (after <= before + 100 && std::chrono::steady_clock::now() < deadline) {
    after = churn_count(child);
  }
  EXPECT_GT(after, before + 100) << "churn stopped making progress";
  EXPECT_TRUE(untouched(child.pid()));
  EXPECT_TRUE(child.alive());
}

struct SignalCounts {
  long usr1 = -1;
  long rt = -1;
};

SignalCounts signal_counts(Child& child) {
  SignalCounts c;
  auto reply = child.command("count");
  if (!reply || std::sscanf(reply->c_str(), "usr1=%ld rt=%ld", &c.usr1, &c.rt) != 2) {
    ADD_FAILURE() << "bad reply to count: " << reply.value_or("<none>");
  }
  return c;
}

// Runs `profctl stack` on pid in a loop on its own thread until stopped; counts runs and failures
// (non-zero exit, or JSON that does not validate against the schema).
class DumpLoop {
 public:
  explicit DumpLoop(pid_t pid)
      : thread_([this, pid] {
          while (!stop_) {
            RunResult r = profctl_stack(pid, {"--format", "json"}, milliseconds(20000));
            std::string failure;
            if (r.exit_code != 0) {
              failure = r.describe();
            } else if (auto valid = schema_valid(r.out); !valid) {
              failure = valid.message();
            }
            if (!failure.empty()) {
              std::lock_guard<std::mutex> lock(mutex_);
              if (failures_.size() < 3) {
                failures_.push_back(failure);
              }
            }
            ++runs_;
          }
        }) {}
  ~DumpLoop() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) {
      thread_.join();
    }
  }
  int runs() const { return runs_; }
  std::vector<std::string> failures() {
    std::lock_guard<std::mutex> lock(mutex_);
    return failures_;
  }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> runs_{0};
  std::mutex mutex_;
  std::vector<std::string> failures_;
  std::thread thread_;
};

// SIGUSR1, one at a time: the next is sent only after the target's handler echoed the previous one
// (standard signals coalesce while pending), so the final count is exactly the number sent. A
// signal that a stop swallows shows up as a missing echo.
TEST(Signals, NoSignalLostOrDuplicatedDuringDumps) {
  PROFCTL_REQUIRE_PROFCTL();
  Child::Options options;
  options.echo_pipe = true;
  Child child({TARGET_SIGNALS, "3"}, options);
  ASSERT_EQ(child.wait_ready(), "ready");

  constexpr long kMinSignals = 2000;
  constexpr int kMinRuns = 10;
  long sent = 0;
  {
    DumpLoop dumps(child.pid());
    while (sent < kMinSignals || dumps.runs() < kMinRuns) {
      ASSERT_LT(sent, 1000000) << "profctl runs too slow: " << dumps.runs() << " runs";
      ASSERT_EQ(::kill(child.pid(), SIGUSR1), 0);  // our child, by pid
      ++sent;
      ASSERT_TRUE(child.read_echo(1, milliseconds(10000)))
          << "SIGUSR1 #" << sent << " was never handled (lost during a stop?) after "
          << dumps.runs() << " dumps";
      if (sent % 8 == 0) {  // small, varying gaps
        std::this_thread::sleep_for(std::chrono::microseconds((sent / 8) % 5 * 100));
      }
    }
    dumps.stop();
    EXPECT_GE(dumps.runs(), kMinRuns);
    for (const auto& f : dumps.failures()) {
      ADD_FAILURE() << "profctl stack failed during the signal stream: " << f;
    }
  }
  // Every echo came after its count: no waiting is needed, but nothing extra may arrive later.
  EXPECT_EQ(signal_counts(child).usr1, sent);
  EXPECT_FALSE(child.read_echo(1, milliseconds(200))) << "an extra SIGUSR1 was delivered";
  EXPECT_EQ(signal_counts(child).usr1, sent);
  EXPECT_TRUE(untouched(child.pid()));
}

// Real-time signals queue: bursts sent with sigqueue while dumps run are all counted exactly once.
TEST(Signals, QueuedRealtimeSignalsAllArriveOnce) {
  PROFCTL_REQUIRE_PROFCTL();
  Child child({TARGET_SIGNALS});
  ASSERT_EQ(child.wait_ready(), "ready");
  constexpr int kBursts = 10;
  constexpr int kPerBurst = 100;
  long sent = 0;
  {
    DumpLoop dumps(child.pid());
    for (int b = 0; b < kBursts; ++b) {
      int runs_before = dumps.runs();
      for (int i = 0; i < kPerBurst; ++i) {
        union sigval value;
        value.sival_int = static_cast<int>(sent);
        ASSERT_EQ(::sigqueue(child.pid(), SIGRTMIN, value), 0) << "sigqueue #" << sent;
        ++sent;
      }
      // Spread the bursts over several dumps.
      auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (dumps.runs() == runs_before && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(milliseconds(1));
      }
    }
    dumps.stop();
    for (const auto& f : dumps.failures()) {
      ADD_FAILURE() << "profctl stack failed during the signal stream: " << f;
    }
  }
  // Queued signals are delivered soon after; ask until the count stops changing.
  long last = -1;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (;;) {
    long now = signal_counts(child).rt;
    if (now == sent || std::chrono::steady_clock::now() > deadline) {
      last = now;
      break;
    }
    std::this_thread::sleep_for(milliseconds(10));
  }
  EXPECT_EQ(last, sent);
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_EQ(signal_counts(child).rt, sent) << "more real-time signals than were sent";
  EXPECT_TRUE(untouched(child.pid()));
}

// A capture directory under /tmp, removed with everything in it.
class OutDir {
 public:
  OutDir() {
    char tmpl[] = "/tmp/profctl-stress-XXXXXX";
    if (mkdtemp(tmpl) != nullptr) {
      path_ = tmpl;
    }
  }
  OutDir(const OutDir&) = delete;
  OutDir& operator=(const OutDir&) = delete;
  ~OutDir() {
    if (!path_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(path_, ec);
    }
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// `profctl attach` of many_threads 500 for a wall profile, under a shell that first sets
// the open-files limit with `ulimit_args`: the tids the wall profile holds, and the run.
std::pair<std::set<pid_t>, RunResult> wall_tids_under_ulimit(pid_t pid,
                                                             const std::string& ulimit_args,
                                                             const std::string& dir) {
  RunOptions opts;
  opts.timeout = milliseconds(90000);
  RunResult r =
      run({"/bin/sh", "-c", "ulimit " + ulimit_args + " && exec \"$0\" \"$@\"", profctl_path(),
           "attach", std::to_string(pid), "-d", "1s", "--profiles", "wall", "-o", dir},
          opts);
  std::set<pid_t> tids;
  std::ifstream in(dir + "/capture.json");
  if (in) {
    const Json capture = Json::parse(in, nullptr, false);
    if (!capture.is_discarded()) {
      for (const Json& s : capture["profiles"]["wall"]["samples"]) {
        tids.insert(std::stoi(s["labels"]["tid"].get<std::string>()));
      }
    }
  }
  return {tids, r};
}

// Sampling keeps files open per thread. A soft open-files limit of 256 (the hard one
// higher) is raised by profctl: every one of the 501 threads is in the wall profile. Under
// a hard limit of 256 the threads it could not follow are said, with what to do, and the
// ones it followed are all there: the two add up to every thread.
TEST(ManyThreads, EveryThreadIsSampledOrSaidPastTheOpenFilesLimit) {
  PROFCTL_REQUIRE_PROFCTL();
  constexpr int kThreads = 500;
  Child child({TARGET_MANY_THREADS, std::to_string(kThreads)});
  ASSERT_EQ(child.wait_ready(), "ready " + std::to_string(kThreads));
  auto tasks = task_ids(child.pid());
  const std::set<pid_t> all(tasks.begin(), tasks.end());
  ASSERT_EQ(all.size(), static_cast<size_t>(kThreads + 1));
  rlimit nofile{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &nofile), 0);
  // The first half needs a hard limit above what 501 threads take (3-4 files each); the
  // second sets its own.
  if (nofile.rlim_max >= 4096) {
    OutDir dir;
    auto [tids, r] = wall_tids_under_ulimit(child.pid(), "-Sn 256", dir.path());
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_EQ(tids, all);
    EXPECT_EQ(r.err.find("never sampled"), std::string::npos) << r.err;
  }
  {
    OutDir dir;
    auto [tids, r] = wall_tids_under_ulimit(child.pid(), "-n 256", dir.path());
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    const std::regex said(
        R"(note: (\d+) threads were never sampled: their /proc files would not )"
        R"(open \(.*Too many open files\); raise the open-files limit \(ulimit -n\))");
    std::smatch m;
    ASSERT_TRUE(std::regex_search(r.err, m, said)) << r.err;
    EXPECT_GT(std::stoul(m[1]), 0u);
    EXPECT_EQ(tids.size() + std::stoul(m[1]), all.size()) << r.err;
    EXPECT_TRUE(std::includes(all.begin(), all.end(), tids.begin(), tids.end()));
  }
  EXPECT_TRUE(untouched(child.pid()));
  EXPECT_EQ(child.command("ping"), "pong");
}

// A look at an idle thread at a tick: with perf events it costs no read (the kernel's switch
// records, or the CPU timer's event page, say it was not scheduled in), so 501 blocked
// threads are read about twice each over the whole capture. Without them each look is a
// /proc read, and all of them together are bounded (2,000 a second), not one per thread
// every 25 ms (501 threads: 20,000 a second). The wall profile has every thread either way.
class IdleLooks : public ::testing::TestWithParam<std::string> {};

TEST_P(IdleLooks, OfManyBlockedThreadsAreFreeWithPerfEventsAndBoundedWithout) {
  PROFCTL_REQUIRE_PROFCTL();
  if (rlimit nofile{}; getrlimit(RLIMIT_NOFILE, &nofile) != 0 || nofile.rlim_max < 4096) {
    GTEST_SKIP() << "501 threads take 3-4 files each: a hard open-files limit of 4096 is needed";
  }
  constexpr int kThreads = 500;
  constexpr double kRate = 99;
  Child child({TARGET_MANY_THREADS, std::to_string(kThreads)});
  ASSERT_EQ(child.wait_ready(), "ready " + std::to_string(kThreads));
  OutDir dir;
  const std::string env = GetParam() == "ticks"     ? "PROFCTL_CPU_TICKS=1"
                          : GetParam() == "signals" ? "PROFCTL_CPU_SIGNALS=1"
                                                    : "PROFCTL_PATH=records";
  RunResult r = run({"/usr/bin/env", env, profctl_path(), "attach", std::to_string(child.pid()),
                     "-d", "2s", "--rate", "99", "--profiles", "wall", "-v", "-o", dir.path()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const std::map<std::string, std::string> source{
      {"ticks", "ticks"}, {"signals", "cpu timer signals"}, {"records", "perf records"}};
  if (GetParam() != "ticks" &&
      r.err.find("cpu from " + source.at(GetParam())) == std::string::npos) {
    GTEST_SKIP() << "perf events are refused here: " << r.err;
  }
  std::smatch ticks;
  std::smatch looks;
  ASSERT_TRUE(std::regex_search(r.err, ticks, std::regex(R"((\d+) ticks \()"))) << r.err;
  ASSERT_TRUE(std::regex_search(r.err, looks, std::regex(R"((\d+) looks at threads' schedstat)")))
      << r.err;
  const double n_ticks = std::stod(ticks[1]);
  const double n_looks = std::stod(looks[1]);
  EXPECT_GT(n_looks, 0);
  if (GetParam() == "ticks") {
    // The budget, plus each thread's first looks before its backoff reaches the budget's
    // interval (1, 2, 4, 8, 16 ticks, then 24 here).
    EXPECT_LE(n_looks, n_ticks * 2000 / kRate + 6 * (kThreads + 1)) << r.err;
  } else {
    // The first look, and the one after the first stop; nothing at the ~195 ticks after.
    EXPECT_LE(n_looks, 3 * (kThreads + 1)) << r.err;
  }
  auto tasks = task_ids(child.pid());
  std::ifstream in(dir.path() + "/capture.json");
  const Json capture = Json::parse(in, nullptr, false);
  ASSERT_FALSE(capture.is_discarded());
  std::set<pid_t> tids;
  for (const Json& s : capture["profiles"]["wall"]["samples"]) {
    tids.insert(std::stoi(s["labels"]["tid"].get<std::string>()));
  }
  EXPECT_EQ(tids, std::set<pid_t>(tasks.begin(), tasks.end()));
  EXPECT_TRUE(untouched(child.pid()));
}

INSTANTIATE_TEST_SUITE_P(Paths, IdleLooks, ::testing::Values("records", "signals", "ticks"));

}  // namespace
}  // namespace profctl::testing
