// SPDX-License-Identifier: MIT
// The process tree: `profctl run` follows every process the command starts (fork, exec) as
// `perf record` does, `--no-children` keeps the command alone, `attach --children` follows
// what the target starts during the capture, and --max-processes bounds a fork bomb. Each
// process of tests/targets/sampling/process_tree.c measures the CPU it spends in its own
// function and says so on stderr: the test knows which pid spent how much where.
#include <gtest/gtest.h>
#include <signal.h>

#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

struct Burn {
  pid_t pid = 0;
  long long cpu_ns = 0;
};

// "burn_a pid=N cpu_ns=M" lines of the targets' stderr.
std::map<std::string, Burn> burns_in(const std::string& err) {
  std::map<std::string, Burn> out;
  static const std::regex line(R"((burn_[ab]) pid=(\d+) cpu_ns=(\d+))");
  for (std::sregex_iterator it(err.begin(), err.end(), line), end; it != end; ++it) {
    out[(*it)[1]] = Burn{static_cast<pid_t>(std::stol((*it)[2])), std::stoll((*it)[3])};
  }
  return out;
}

std::string sh_quote(const std::string& s) { return "'" + s + "'"; }

long long cpu_in(const Json& cpu, const std::string& function) {
  return sum_values(cpu, value_index(cpu, "cpu"),
                    [&](const Json& s) { return has_function(s, function); });
}

// Every sample that has `function` carries the pid label `pid` and the comm of process_tree,
// and its whole stack is function < main < ... < _start, named from process_tree's own
// modules (not from the shell's, whose image is another).
::testing::AssertionResult labelled_and_whole(const Json& cpu, const std::string& function,
                                              pid_t pid) {
  int seen = 0;
  for (const Json& s : cpu.at("samples")) {
    if (!has_function(s, function)) {
      continue;
    }
    ++seen;
    if (label(s, "pid") != std::to_string(pid) || label(s, "comm") != "process_tree") {
      return ::testing::AssertionFailure()
             << function << " sample labelled pid=" << label(s, "pid")
             << " comm=" << label(s, "comm") << ", expected pid=" << pid << " comm=process_tree";
    }
    if (auto r = stack_ends_with(s, then({function}, main_root())); !r) {
      return r;
    }
  }
  if (seen == 0) {
    return ::testing::AssertionFailure() << "no cpu sample in " << function << "\n"
                                         << describe_samples(cpu);
  }
  return ::testing::AssertionSuccess();
}

TEST(ProcessTree, RunFollowsAShellPipelineIntoItsChildren) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  const std::string script =
      sh_quote(PROCESS_TREE) + " burn-a 900 | " + sh_quote(PROCESS_TREE) + " burn-b 450";
  RunResult r = run(run_argv({"--profiles", "cpu,wall", "--rate", "199", "-o", dir.path(),
                              "--format", "json,pprof"},
                             {"/bin/sh", "-c", script}),
                    RunOptions{milliseconds(90000), std::nullopt});
  ASSERT_FALSE(r.timed_out) << r.describe();
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto burns = burns_in(r.err);
  ASSERT_EQ(burns.size(), 2u) << "the targets did not report their CPU:\n" << r.err;
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* cpu = profile_of(*capture, "cpu");
  ASSERT_NE(cpu, nullptr);
  EXPECT_TRUE(labelled_and_whole(*cpu, "burn_a", burns["burn_a"].pid));
  EXPECT_TRUE(labelled_and_whole(*cpu, "burn_b", burns["burn_b"].pid));

  // The shares are the processes' own: burn_a spent twice burn_b's CPU.
  const double a = static_cast<double>(cpu_in(*cpu, "burn_a"));
  const double b = static_cast<double>(cpu_in(*cpu, "burn_b"));
  const double truth_a = static_cast<double>(burns["burn_a"].cpu_ns);
  const double truth_b = static_cast<double>(burns["burn_b"].cpu_ns);
  ASSERT_GT(a + b, 0);
  EXPECT_NEAR(a / (a + b), truth_a / (truth_a + truth_b), 0.08) << describe_samples(*cpu);
  // And almost all of their CPU is in the profile (the shell itself only waits).
  EXPECT_GT(a + b, 0.8 * (truth_a + truth_b));
  EXPECT_LT(a + b, 1.15 * (truth_a + truth_b));
  EXPECT_TRUE(outputs_valid(dir.path(), {{"cpu", {"burn_a", "burn_b"}}}));
}

// posix_spawn: glibc's clone(CLONE_VM | CLONE_VFORK) (a vfork event) and an exec of the same
// program in the child; the child's CPU is its own, under its pid.
TEST(ProcessTree, RunFollowsAPosixSpawnedChild) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  RunResult r =
      run(run_argv({"--profiles", "cpu", "--rate", "199", "-o", dir.path(), "--format", "json"},
                   {PROCESS_TREE, "spawn", "600"}),
          RunOptions{milliseconds(90000), std::nullopt});
  ASSERT_FALSE(r.timed_out) << r.describe();
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto burns = burns_in(r.err);
  ASSERT_EQ(burns.count("burn_a"), 1u) << r.err;
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* cpu = profile_of(*capture, "cpu");
  ASSERT_NE(cpu, nullptr);
  EXPECT_TRUE(labelled_and_whole(*cpu, "burn_a", burns["burn_a"].pid));
  EXPECT_NE(burns["burn_a"].pid, capture->at("target").at("pid").get<pid_t>());
  const double sampled = static_cast<double>(cpu_in(*cpu, "burn_a"));
  const double truth = static_cast<double>(burns["burn_a"].cpu_ns);
  EXPECT_GT(sampled, 0.8 * truth) << describe_samples(*cpu);
  EXPECT_LT(sampled, 1.15 * truth) << describe_samples(*cpu);
}

TEST(ProcessTree, RunNoChildrenKeepsOnlyTheCommand) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  const std::string script =
      sh_quote(PROCESS_TREE) + " burn-a 300 | " + sh_quote(PROCESS_TREE) + " burn-b 150";
  RunResult r = run(
      run_argv({"--no-children", "--profiles", "cpu,wall", "-o", dir.path(), "--format", "json"},
               {"/bin/sh", "-c", script}),
      RunOptions{milliseconds(90000), std::nullopt});
  ASSERT_FALSE(r.timed_out) << r.describe();
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  ASSERT_EQ(burns_in(r.err).size(), 2u) << "the children did not run:\n" << r.err;
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  for (const char* kind : {"cpu", "wall"}) {
    const Json* p = profile_of(*capture, kind);
    ASSERT_NE(p, nullptr) << kind;
    if (std::string(kind) == "wall") {  // the shell only waits: its cpu may be empty
      EXPECT_GT(sum_values(*p, value_index(*p, "samples")), 0) << "the shell was not sampled";
    }
    for (const Json& s : p->at("samples")) {
      EXPECT_FALSE(has_function(s, "burn_a") || has_function(s, "burn_b"))
          << kind << ": a child's sample under --no-children: " << s.dump();
      EXPECT_EQ(label(s, "pid"), "") << "process labels without children followed";
    }
  }
  EXPECT_EQ(capture->at("options").value("children", ""), "not followed");
}

TEST(ProcessTree, AttachChildrenFollowsAForkingServer) {
  PROFCTL_REQUIRE_PROFCTL();
  Child server({PROCESS_TREE, "server"});
  ASSERT_TRUE(server.wait_ready()) << "process_tree server did not say ready";
  TempDir dir;
  BgProcess p(attach_argv(server.pid(), {"--children", "--profiles", "cpu,wall", "--rate", "199",
                                         "-o", dir.path(), "--format", "json"}));
  ASSERT_TRUE(wait_traced(server.pid())) << "profctl never attached: " << p.err();
  std::map<pid_t, long long> served;
  for (int i = 0; i < 3; ++i) {
    auto reply = server.command("fork 300", milliseconds(60000));
    ASSERT_TRUE(reply && reply->rfind("done ", 0) == 0) << (reply ? *reply : "no reply");
    std::istringstream in(reply->substr(5));
    pid_t pid = 0;
    long long ns = 0;
    in >> pid >> ns;
    served[pid] = ns;
  }
  end_with_sigint(p);
  EXPECT_EQ(tracer_of(server.pid()), 0) << "the server is still traced after the capture";
  auto after = server.command("fork 10", milliseconds(60000));
  EXPECT_TRUE(after && after->rfind("done ", 0) == 0)
      << "the server does not serve after the capture: " << (after ? *after : "no reply");

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* cpu = profile_of(*capture, "cpu");
  ASSERT_NE(cpu, nullptr);
  long long total_served = 0;
  for (const auto& [pid, ns] : served) {
    total_served += ns;
  }
  // Every request's CPU is in served_request, in the child that served it: labelled with its
  // pid, and unwound to main (a forked child shares the server's modules).
  std::map<pid_t, long long> by_pid;
  for (const Json& s : cpu->at("samples")) {
    if (!has_function(s, "served_request")) {
      continue;
    }
    const pid_t pid =
        static_cast<pid_t>(std::stol(label(s, "pid").empty() ? "0" : label(s, "pid")));
    EXPECT_TRUE(served.count(pid))
        << "served_request sample of pid " << pid << ", not one of the children";
    EXPECT_EQ(label(s, "comm"), "process_tree");
    EXPECT_TRUE(stack_ends_with(s, then({"served_request", "server"}, main_root())));
    by_pid[pid] +=
        s.at("values").at(static_cast<size_t>(value_index(*cpu, "cpu"))).get<long long>();
  }
  for (const auto& [pid, ns] : served) {
    EXPECT_GT(by_pid[pid], ns / 2) << "child " << pid << " spent " << ns
                                   << " ns serving; its samples say " << by_pid[pid] << "\n"
                                   << describe_samples(*cpu);
  }
  long long sampled = 0;
  for (const auto& [pid, ns] : by_pid) {
    sampled += ns;
  }
  EXPECT_GT(sampled, total_served * 8 / 10);
  EXPECT_LT(sampled, total_served * 12 / 10);
}

// An attach that neither follows children nor puts probes in the target does not seize
// the processes the target creates (each would cost the server three stops: its fork event,
// the child's first stop, the detach); one with probes still does, to take the inherited
// probes out of each child before it runs. -vv logs each child it detaches.
TEST(ProcessTree, AttachWithoutChildrenOrProbesDoesNotSeizeTheChildren) {
  PROFCTL_REQUIRE_PROFCTL();
  Child server({PROCESS_TREE, "server"});
  ASSERT_TRUE(server.wait_ready()) << "process_tree server did not say ready";
  for (const std::string profiles : {"cpu,wall", "heap"}) {
    TempDir dir;
    BgProcess p(attach_argv(server.pid(), {"--profiles", profiles, "-vv", "-o", dir.path()}));
    ASSERT_TRUE(wait_traced(server.pid())) << "profctl never attached: " << p.err();
    if (profiles == "heap") {
      start_and_wait_for_probes(server, p);
    }
    for (int i = 0; i < 5; ++i) {
      auto reply = server.command("fork 1", milliseconds(60000));
      ASSERT_TRUE(reply && reply->rfind("done ", 0) == 0) << (reply ? *reply : "no reply");
    }
    end_with_sigint(p);
    EXPECT_EQ(tracer_of(server.pid()), 0) << profiles << ": still traced after the capture";
    const std::string err = p.err();
    const bool detached_a_child = err.find(") detached") != std::string::npos &&
                                  err.find("child process ") != std::string::npos;
    if (profiles == "heap") {
      EXPECT_TRUE(detached_a_child) << "heap: the children were not cleaned: " << err;
    } else {
      EXPECT_FALSE(detached_a_child) << profiles << ": a child was seized: " << err;
    }
  }
}

TEST(ProcessTree, AForkBombIsBoundedByMaxProcesses) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  RunResult r = run(run_argv({"--max-processes", "3", "--profiles", "cpu,wall", "-o", dir.path(),
                              "--format", "json"},
                             {PROCESS_TREE, "bomb", "12", "200"}),
                    RunOptions{milliseconds(90000), std::nullopt});
  ASSERT_FALSE(r.timed_out) << r.describe();
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_NE(r.out.find("bombed 12"), std::string::npos) << r.describe();
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  bool noted = false;
  for (const Json& w : capture->value("warnings", Json::array())) {
    noted = noted || w.get<std::string>().find(
                         "9 child processes ran unprofiled: over "
                         "--max-processes 3") != std::string::npos;
  }
  EXPECT_TRUE(noted) << capture->value("warnings", Json()).dump();
  std::map<std::string, long long> children;  // pid -> cpu ns in bomb_child
  const Json* cpu = profile_of(*capture, "cpu");
  ASSERT_NE(cpu, nullptr);
  const size_t cpu_at = static_cast<size_t>(value_index(*cpu, "cpu"));
  for (const Json& s : cpu->at("samples")) {
    if (has_function(s, "bomb_child")) {
      children[label(s, "pid")] += s.at("values").at(cpu_at).get<long long>();
    }
  }
  EXPECT_EQ(children.size(), 3u) << "children sampled: " << children.size() << "\n"
                                 << describe_samples(*cpu);
  // Each followed child spent 200 ms of CPU from its first instruction, all of it counted
  // (a thread born during the capture has no CPU before it to leave out).
  for (const auto& [pid, ns] : children) {
    EXPECT_GT(ns, 160'000'000) << "child " << pid << ": " << ns << " ns";
    EXPECT_LT(ns, 230'000'000) << "child " << pid << ": " << ns << " ns";
  }
}

}  // namespace
}  // namespace profctl::testing::sampling
