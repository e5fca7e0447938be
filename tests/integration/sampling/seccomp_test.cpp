// SPDX-License-Identifier: MIT
// seccomp is respected: a target whose filter would kill it (SECCOMP_RET_KILL_PROCESS for
// memfd_create, or for mmap/mprotect with PROT_EXEC), or fail a call (SECCOMP_RET_ERRNO),
// for one of the syscalls profctl runs inside it to install the probes is never sent that
// syscall: profctl refuses the probes with the filter's verdict, exits 3 when nothing else
// was asked (0 with a note otherwise), and the target runs on exactly as before. A target
// under an allow-all filter still gets its probes. Target: seccomp_target.c.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ostream>
#include <string>

#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

// PTRACE_SECCOMP_GET_FILTER needs CAP_SYS_ADMIN and a tracer not under seccomp itself;
// without them profctl cannot tell what the filter says and refuses every filtered target.
bool can_read_filters() {
  const std::string status = read_text("/proc/self/status").value_or("");
  auto field = [&](const std::string& key) {
    const size_t at = status.find("\n" + key + ":");
    if (at == std::string::npos) {
      return std::string();
    }
    const size_t start = status.find_first_not_of(" \t", at + key.size() + 2);
    return status.substr(start, status.find('\n', start) - start);
  };
  const unsigned long long cap_eff =
      std::stoull(field("CapEff").empty() ? "0" : field("CapEff"), nullptr, 16);
  constexpr int kCapSysAdmin = 21;
  return (cap_eff >> kCapSysAdmin & 1) != 0 && field("Seccomp") == "0";
}

// "pong rounds=R errors=E" -> R, after checking E == 0; -1 when there is no answer.
long long rounds_of(Child& target) {
  auto reply = target.command("ping");
  if (!reply) {
    ADD_FAILURE() << "the target does not answer";
    return -1;
  }
  auto kv = parse_key_values(*reply);
  EXPECT_EQ(kv["errors"], "0") << *reply;
  return kv.count("rounds") ? std::stoll(kv["rounds"]) : -1;
}

// The target's maps once its worker has run a round (its arena exists): what they must be
// again after profctl.
std::string settled_maps(Child& target) {
  EXPECT_TRUE(wait_until([&] { return rounds_of(target) > 0; }, milliseconds(30000)));
  return read_text("/proc/" + std::to_string(target.pid()) + "/maps").value_or("");
}

// The target answers, its worker still works, its maps are as before, and told to quit it
// exits 0 (not killed by SIGSYS, no failed check).
void expect_alive_and_well(Child& target, const std::string& maps_before) {
  if (!target.alive()) {
    const int st = target.wait_status().value_or(0);
    FAIL() << "the target died: "
           << (WIFSIGNALED(st) ? "killed by signal " + std::to_string(WTERMSIG(st))
                               : "exit " + std::to_string(WEXITSTATUS(st)));
  }
  ASSERT_TRUE(wait_untraced(target.pid()));
  const long long before = rounds_of(target);
  EXPECT_TRUE(wait_until([&] { return rounds_of(target) > before; }, milliseconds(30000)))
      << "the worker stopped";
  EXPECT_EQ(read_text("/proc/" + std::to_string(target.pid()) + "/maps").value_or(""), maps_before);
  EXPECT_FALSE(target.command("quit", milliseconds(5000)));  // no reply: it exits
  ASSERT_TRUE(wait_until([&] { return !target.alive(); }, milliseconds(30000)));
  ASSERT_TRUE(target.wait_status());
  const int st = *target.wait_status();
  EXPECT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0)
      << "the target ended with status " << st
      << (WIFSIGNALED(st) ? " (signal " + std::to_string(WTERMSIG(st)) + ")" : std::string());
}

struct Refusal {
  const char* variant;
  const char* verdict;  // the message after "probe-driven profiles unavailable: "
};

void PrintTo(const Refusal& r, std::ostream* os) { *os << r.variant; }

class SeccompRefusal : public ::testing::TestWithParam<Refusal> {};

TEST_P(SeccompRefusal, TheProbesAreRefusedAndTheTargetRunsOn) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SECCOMP_TARGET, GetParam().variant});
  ASSERT_TRUE(target.wait_ready());
  const std::string maps = settled_maps(target);
  TempDir dir;
  RunResult r = profctl({"attach", std::to_string(target.pid()), "--profiles", "heap", "-d", "0.5s",
                         "-o", dir.path()});
  // Probes failed and nothing else was asked: exit 3 (DESIGN "Exit codes").
  EXPECT_EQ(r.exit_code, 3) << r.describe();
  const std::string expected = can_read_filters() ? std::string(GetParam().verdict)
                                                  : std::string("cannot tell whether thread ");
  EXPECT_NE(r.err.find("probe-driven profiles unavailable: " + expected), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("the probes could not be set up: nothing to capture"), std::string::npos)
      << r.err;
  expect_alive_and_well(target, maps);
}

INSTANTIATE_TEST_SUITE_P(
    Seccomp, SeccompRefusal,
    ::testing::Values(
        Refusal{"memfd",
                "the target's seccomp filter would kill it for memfd_create "
                "(SECCOMP_RET_KILL_PROCESS)"},
        Refusal{
            "exec",
            "the target's seccomp filter would kill it for mprotect (SECCOMP_RET_KILL_PROCESS)"},
        Refusal{"errno",
                "the target's seccomp filter would fail memfd_create with errno 1 (Operation not "
                "permitted, SECCOMP_RET_ERRNO)"}),
    [](const ::testing::TestParamInfo<Refusal>& info) { return std::string(info.param.variant); });

// Another profile asked beside the probes' own: the capture goes on without them, exit 0,
// and the capture says why.
TEST(Seccomp, WithAnotherProfileTheCaptureGoesOnAndSaysWhy) {
  PROFCTL_REQUIRE_PROFCTL();
  if (!can_read_filters()) {
    GTEST_SKIP() << "profctl cannot read seccomp filters here (needs CAP_SYS_ADMIN, no seccomp)";
  }
  Child target({SECCOMP_TARGET, "memfd"});
  ASSERT_TRUE(target.wait_ready());
  const std::string maps = settled_maps(target);
  TempDir dir;
  RunResult r = profctl({"attach", std::to_string(target.pid()), "--profiles", "heap,threads", "-d",
                         "0.5s", "-o", dir.path()});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  const std::string verdict =
      "the target's seccomp filter would kill it for memfd_create (SECCOMP_RET_KILL_PROCESS)";
  EXPECT_NE(r.err.find("probe-driven profiles unavailable: " + verdict), std::string::npos)
      << r.err;
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  EXPECT_EQ(profile_of(*capture, "heap"), nullptr);
  EXPECT_NE(profile_of(*capture, "threads"), nullptr);
  bool noted = false;
  for (const Json& w : capture->value("warnings", Json::array())) {
    noted = noted || (w.is_string() && w.get<std::string>() == "probes: " + verdict);
  }
  EXPECT_TRUE(noted) << "no warning gives the verdict: "
                     << capture->value("warnings", Json()).dump();
  expect_alive_and_well(target, maps);
}

// Without CAP_SYS_ADMIN profctl cannot read the filters (PTRACE_SECCOMP_GET_FILTER: EACCES):
// it cannot tell what they would do, so even an allow-all filter gets no probes, and the
// message says what to do.
TEST(Seccomp, UnreadableFiltersRefuseTheProbesSayingWhy) {
  PROFCTL_REQUIRE_PROFCTL();
  const std::string setpriv = "/usr/bin/setpriv";
  if (!can_read_filters() || access(setpriv.c_str(), X_OK) != 0) {
    GTEST_SKIP() << "needs CAP_SYS_ADMIN to drop, and " << setpriv;
  }
  Child target({SECCOMP_TARGET, "allow"});
  ASSERT_TRUE(target.wait_ready());
  const std::string maps = settled_maps(target);
  TempDir dir;
  RunResult r =
      run({setpriv, "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", profctl_path(), "attach",
           std::to_string(target.pid()), "--profiles", "heap", "-d", "0.5s", "-o", dir.path()});
  EXPECT_EQ(r.exit_code, 3) << r.describe();
  const std::string tid = std::to_string(target.pid());
  EXPECT_NE(r.err.find("probe-driven profiles unavailable: cannot tell whether thread " + tid +
                       "'s seccomp filters allow profctl's syscalls (PTRACE_SECCOMP_GET_FILTER " +
                       tid + " #0: Permission denied): reading them needs CAP_SYS_ADMIN"),
            std::string::npos)
      << r.err;
  expect_alive_and_well(target, maps);
}

// Two stacked filters that allow everything: every remote syscall is checked against both and
// allowed; the heap profile records the worker's allocations.
TEST(Seccomp, AnAllowAllFilterStillGetsItsProbes) {
  PROFCTL_REQUIRE_PROFCTL();
  if (!can_read_filters()) {
    GTEST_SKIP() << "profctl cannot read seccomp filters here (needs CAP_SYS_ADMIN, no seccomp)";
  }
  Child target({SECCOMP_TARGET, "allow"});
  ASSERT_TRUE(target.wait_ready());
  const std::string maps = settled_maps(target);
  TempDir dir;
  RunResult r = profctl({"attach", std::to_string(target.pid()), "--profiles", "heap", "--mem-rate",
                         "1", "-d", "0.5s", "-o", dir.path()});
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.err.find("unavailable"), std::string::npos) << r.err;
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  const int objects = value_index(*heap, "alloc_objects");
  ASSERT_GE(objects, 0);
  // seccomp_target.c's worker thread: worker_main -> work_round -> malloc, the probe's stop.
  const auto stack = then({"malloc", "work_round", "worker_main"}, thread_root());
  for (const Json& s : heap->at("samples")) {
    if (has_function(s, "work_round")) {
      EXPECT_TRUE(stack_is(s, stack));
    }
  }
  const long long recorded =
      sum_values(*heap, objects, [&](const Json& s) { return bool(stack_is(s, stack)); });
  // 16 allocations a round, a round every millisecond or so, for 0.5 s.
  EXPECT_GE(recorded, 16) << describe_samples(*heap);
  expect_alive_and_well(target, maps);
}

}  // namespace
}  // namespace profctl::testing::sampling
