// SPDX-License-Identifier: MIT
// Captures at 499 Hz while the target works against the tracer: threads created and joined all the
// time (every creation counted, nothing hangs) and a burst of queued real-time signals (none lost,
// none duplicated). Targets: sampling_churn.c, tests/targets/signals.c.
#include <gtest/gtest.h>
#include <signal.h>

#include <cerrno>
#include <set>
#include <sstream>
#include <thread>

#include "sampling_support.h"
#include "support/procfs.h"

namespace profctl::testing::sampling {
namespace {

using Clock = std::chrono::steady_clock;

long churn_count(Child& target) {
  auto reply = target.command("count");
  if (!reply || reply->rfind("count ", 0) != 0) {
    return -1;
  }
  return std::stol(reply->substr(6));
}

TEST(SamplingChurn, EveryThreadCreatedDuringA499HzCaptureIsCounted) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SAMPLING_CHURN});
  auto ready = target.wait_ready();
  ASSERT_TRUE(ready) << "sampling_churn did not say ready";
  std::set<std::string> churners;
  {
    std::stringstream list(parse_key_values(*ready).at("churners"));
    std::string tid;
    while (std::getline(list, tid, ',')) {
      churners.insert(tid);
    }
  }
  ASSERT_EQ(churners.size(), 2u);
  const long before_attach = churn_count(target);
  ASSERT_GE(before_attach, 0);

  TempDir dir;
  BgProcess profctl_run(attach_argv(
      target.pid(), {"--rate", "499", "--profiles", "cpu,wall,threadcreate", "-o", dir.path()}));
  ASSERT_TRUE(wait_traced(target.pid())) << "profctl never attached: " << profctl_run.err();
  // Every creation counted after this reply is cloned while profctl traces the target.
  const long traced_from = churn_count(target);
  ASSERT_GE(traced_from, 0);
  // Two seconds of churn under the tracer (a capture window, not a wait for readiness).
  std::vector<long> counts;
  const auto window_end = Clock::now() + std::chrono::seconds(2);
  while (Clock::now() < window_end) {
    std::this_thread::sleep_for(milliseconds(200));
    counts.push_back(churn_count(target));
    ASSERT_GE(counts.back(), 0) << "the target stopped answering during the capture";
  }
  std::ostringstream seen;
  seen << "creations counted by the target: " << before_attach << " before the attach, "
       << traced_from << " once traced, then every 200 ms:";
  for (long c : counts) {
    seen << " " << c;
  }
  auto stopped = target.command("stop", milliseconds(10000));
  const bool stop_ok = stopped && stopped->rfind("stopped count=", 0) == 0;
  EXPECT_TRUE(stop_ok) << "the churners did not come back from pthread_create within 10 s while "
                          "traced (a creating thread left stopped?). "
                       << seen.str() << "\nthreads: " << describe_tasks(target.pid());
  const long traced_to = stop_ok ? std::stol(stopped->substr(14)) : counts.back();
  EXPECT_GE(traced_to - traced_from, 50)
      << "the target hardly created threads while traced. " << seen.str();

  ASSERT_TRUE(wait_until([&] { return catches(profctl_run.pid(), SIGINT); }, milliseconds(30000)));
  ASSERT_TRUE(profctl_run.signal(SIGINT));
  auto status = profctl_run.wait_exit(milliseconds(20000));
  ASSERT_TRUE(status) << "profctl attach hangs: not ended 20 s after SIGINT; profctl: "
                      << describe_tasks(profctl_run.pid())
                      << "\ntarget: " << describe_tasks(target.pid()) << "\n"
                      << profctl_run.err();
  EXPECT_EQ(exit_code_of(*status), 0) << profctl_run.describe_status() << "\n" << profctl_run.err();
  EXPECT_TRUE(untouched(target.pid()));
  ASSERT_TRUE(stop_ok);

  // The target goes on creating threads.
  EXPECT_EQ(target.command("resume"), "resumed");
  EXPECT_TRUE(wait_until([&] { return churn_count(target) > traced_to + 10; }, milliseconds(30000)))
      << "the target stopped creating threads after the capture";

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* p = profile_of(*capture, "threadcreate");
  ASSERT_NE(p, nullptr);
  const int count = value_index(*p, "threadcreate");
  const long long created = sum_values(*p, count);
  // At least every creation counted after `traced_from`, at most every one since before the attach.
  EXPECT_GE(created, traced_to - traced_from)
      << "threadcreate total vs creations the target counted while traced (" << traced_from
      << " -> " << traced_to << ")";
  EXPECT_LE(created, traced_to - before_attach)
      << "threadcreate total vs every creation since before the attach (" << before_attach << " -> "
      << traced_to << ")";
  // Each creation's stack is the creating churner's whole stack at its clone: libc's
  // pthread_create internals, then churn_create_one up to clone3 (a stack cut at glibc's
  // clone3, which ends its CFI before the syscall, fails: unwind/'s retry from the entry).
  const auto at_clone = then({"churn_create_one", "churner_main"}, thread_root());
  for (const Json& s : p->at("samples")) {
    EXPECT_TRUE(stack_ends_with(s, at_clone));
    // Past the detail cap a row is one stack's count, without the creator's tid.
    const std::string creator = label(s, "tid");
    EXPECT_TRUE(creator.empty() || churners.count(creator))
        << "creator is not a churner: " << s.dump();
  }
  EXPECT_TRUE(outputs_valid(dir.path(), {{"threadcreate", {"churn_create_one"}}}));
}

std::optional<std::pair<long, long>> signal_counts(Child& target) {
  auto reply = target.command("count");
  if (!reply) {
    return std::nullopt;
  }
  auto kv = parse_key_values(*reply);
  if (!kv.count("usr1") || !kv.count("rt")) {
    return std::nullopt;
  }
  return std::make_pair(std::stol(kv["usr1"]), std::stol(kv["rt"]));
}

TEST(SamplingSignals, EveryQueuedSignalSentDuringA499HzCaptureArrivesOnce) {
  PROFCTL_REQUIRE_PROFCTL();
  constexpr long kSignals = 2000;
  Child target({SAMPLING_SIGNALS});
  ASSERT_TRUE(target.wait_ready()) << "signals did not say ready";
  TempDir dir;
  BgProcess profctl_run(attach_argv(
      target.pid(), {"-d", "2s", "--rate", "499", "--profiles", "cpu,wall", "-o", dir.path()}));
  ASSERT_TRUE(wait_traced(target.pid())) << "profctl never attached: " << profctl_run.err();

  // SIGRTMIN queues: each sigqueue is one delivery. EAGAIN (the queue limit) means "try again".
  long sent = 0;
  long sent_while_traced = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (sent < kSignals && Clock::now() < deadline) {
    union sigval value = {};
    if (::sigqueue(target.pid(), SIGRTMIN, value) == 0) {
      ++sent;
      sent_while_traced += tracer_of(target.pid()) > 0 ? 1 : 0;
      if (sent % 50 == 0) {
        std::this_thread::sleep_for(milliseconds(10));  // spread over the capture
      }
    } else {
      ASSERT_EQ(errno, EAGAIN) << "sigqueue: " << std::strerror(errno);
      std::this_thread::sleep_for(milliseconds(1));
    }
  }
  ASSERT_EQ(sent, kSignals);
  auto status = profctl_run.wait_exit(milliseconds(60000));
  ASSERT_TRUE(status) << "profctl attach -d 2s did not end\n" << profctl_run.err();
  EXPECT_EQ(exit_code_of(*status), 0) << profctl_run.describe_status() << "\n" << profctl_run.err();
  EXPECT_TRUE(untouched(target.pid()));

  std::optional<std::pair<long, long>> counts;
  wait_until(
      [&] {
        counts = signal_counts(target);
        return counts && counts->second >= kSignals;
      },
      milliseconds(10000), milliseconds(20));
  ASSERT_TRUE(counts) << "the target does not answer after the capture";
  EXPECT_EQ(counts->second, kSignals) << "SIGRTMIN received vs sent (" << sent_while_traced
                                      << " of them sent while the target was traced)";
  EXPECT_EQ(counts->first, 0) << "SIGUSR1 received, none sent";
  EXPECT_GT(sent_while_traced, 0) << "no signal was sent during the capture";
  EXPECT_TRUE(outputs_valid(dir.path()));
}

}  // namespace
}  // namespace profctl::testing::sampling
