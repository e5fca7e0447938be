// SPDX-License-Identifier: MIT
// Leaving a probed wait by unwinding, with profctl attached (`--profiles block,mutex`): a
// thread cancelled while blocked in pthread_cond_wait, sem_wait or pthread_join runs every
// pthread_cleanup_push handler (plain C and -fexceptions C) and every C++ destructor, and
// leaves nothing locked; an exception thrown by a signal handler that interrupted a probed
// wait is caught above its destructor. The targets (tests/targets/cancel) count all of it
// themselves, and check before each cancellation that the wait is really hijacked by the
// probe (its stack holds the code area's wait-return address), so every round tests the
// unwind through a hijacked frame.
#include <gtest/gtest.h>

#include <map>
#include <ostream>
#include <sstream>

#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

constexpr int kRounds = 30;

// "done cond rounds=30 hijacked=30 handlers=60/60 ..." -> {"rounds": "30", "handlers": "60/60"}
std::map<std::string, std::string> fields(const std::string& reply) {
  std::map<std::string, std::string> out;
  std::istringstream in(reply);
  std::string word;
  while (in >> word) {
    if (auto eq = word.find('='); eq != std::string::npos) {
      out[word.substr(0, eq)] = word.substr(eq + 1);
    }
  }
  return out;
}

struct Variant {
  const char* name;
  const char* exe;
  std::vector<std::string> kinds;  // commands, each run with kRounds
  const char* cleanup;             // the reply's field counting handlers or destructors
};

// gtest prints a parameter with this (else as raw bytes).
void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

std::string all_of(int n) { return std::to_string(n); }

// What a target reports when every round did what it must: hijacked = `hijacked` rounds.
void expect_clean(const std::string& kind, const std::string& reply, const char* cleanup,
                  int hijacked) {
  SCOPED_TRACE(kind + ": " + reply);
  ASSERT_EQ(reply.rfind("done " + kind, 0), 0u);
  auto f = fields(reply);
  EXPECT_EQ(f["rounds"], all_of(kRounds));
  EXPECT_EQ(f["hijacked"], all_of(hijacked)) << "the waits were not all entered through the probe";
  // "K/E": every handler or destructor ran.
  const std::string ran = f[cleanup];
  const auto slash = ran.find('/');
  ASSERT_NE(slash, std::string::npos) << ran;
  EXPECT_EQ(ran.substr(0, slash), ran.substr(slash + 1)) << cleanup << " skipped";
  EXPECT_EQ(f["unlocked"], all_of(kRounds)) << "a mutex was left locked";
  if (kind == "throw") {
    EXPECT_EQ(f["caught"], all_of(kRounds));
  } else {
    EXPECT_EQ(f["cancelled"], all_of(kRounds));
    EXPECT_EQ(f["joined"], all_of(kRounds)) << "a cancelled join left its thread claimed";
  }
}

class Cancel : public ::testing::TestWithParam<Variant> {};

TEST_P(Cancel, EveryCleanupHandlerAndDestructorRunsThroughAHijackedWait) {
  PROFCTL_REQUIRE_PROFCTL();
  const Variant& v = GetParam();
  Child target({v.exe});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(target.pid(), {"--profiles", "block,mutex", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  for (const std::string& kind : v.kinds) {
    const std::string reply =
        target.command(kind + " " + std::to_string(kRounds), milliseconds(120000))
            .value_or("(no reply: " + describe_tasks(target.pid()) + ")");
    expect_clean(kind, reply, v.cleanup, kRounds);
  }
  end_with_sigint(p);
  EXPECT_TRUE(target.alive());
  EXPECT_FALSE(probes_in(target.pid())) << "a probe mapping is left";
  // The target still works after profctl is gone.
  const std::string after = target.command(v.kinds.front() + " 1").value_or("(no reply)");
  EXPECT_EQ(after.rfind("done", 0), 0u) << after;
}

// The targets' own checks without profctl: nothing is hijacked (no false positive), and
// everything runs.
TEST_P(Cancel, WithoutProfctlTheTargetCountsEveryCleanupAndNoHijack) {
  const Variant& v = GetParam();
  Child target({v.exe});
  ASSERT_TRUE(target.wait_ready());
  for (const std::string& kind : v.kinds) {
    const std::string reply =
        target.command(kind + " " + std::to_string(kRounds), milliseconds(120000)).value_or("");
    expect_clean(kind, reply, v.cleanup, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Targets, Cancel,
    ::testing::Values(
        Variant{"C", CANCEL_TARGET, {"cond", "sem", "join"}, "handlers"},
        Variant{"CExceptions", CANCEL_TARGET_EXC, {"cond", "sem", "join"}, "handlers"},
        Variant{"Cxx", CANCEL_TARGET_CXX, {"cond", "sem", "join", "throw"}, "destructors"}),
    [](const ::testing::TestParamInfo<Variant>& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace profctl::testing::sampling
