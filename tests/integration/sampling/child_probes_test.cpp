// SPDX-License-Identifier: MIT
// Probe-driven profiles of followed child processes (target: heap_fork.c). A forked child
// inherits the probes; a followed one keeps them with a ring of its own, and its rows carry
// its pid; an unfollowed one is cleaned before it runs; a followed child that outlives the
// capture is left as it was before any tracer came.
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <string>

#include "sampling_support.h"
#include "support/procfs.h"

namespace profctl::testing::sampling {
namespace {

using V = std::vector<long long>;

// The heap values (alloc_objects, alloc_space, inuse_objects, inuse_space) of the samples
// through `function`, by their pid label ("" when unlabelled).
std::map<std::string, V> heap_by_pid(const Json& heap, const std::string& function) {
  std::map<std::string, V> out;
  for (const Json& s : heap.at("samples")) {
    if (!has_function(s, function)) {
      continue;
    }
    V& v = out.try_emplace(label(s, "pid"), V(4, 0)).first->second;
    for (size_t i = 0; i < 4; ++i) {
      v[i] += s.at("values").at(i).get<long long>();
    }
  }
  return out;
}

// Contentions of the mutex samples through `function`, by pid label.
std::map<std::string, long long> contentions_by_pid(const Json& mutex,
                                                    const std::string& function) {
  std::map<std::string, long long> out;
  const int ci = value_index(mutex, "contentions");
  for (const Json& s : mutex.at("samples")) {
    if (has_function(s, function)) {
      out[label(s, "pid")] += s.at("values").at(static_cast<size_t>(ci)).get<long long>();
    }
  }
  return out;
}

long long number_after(const std::string& text, const std::string& key) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(key + "=([0-9]+)"))) {
    return -1;
  }
  return std::stoll(m[1]);
}

TEST(ChildProbes, RunRecordsTheForkedChildsAllocationsAndLocksUnderItsPid) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  RunResult r =
      run(run_argv({"--profiles", "heap,mutex", "--mem-rate", "1", "-o", dir.path()}, {HEAP_FORK}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const long long child = number_after(r.out, "child");
  const long long parent = number_after(r.out, "parent");
  const long long contended = number_after(r.out, "contended");
  ASSERT_GT(child, 0) << r.out;
  ASSERT_GT(parent, 0) << r.out;
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  // Exact: every allocation at rate 1, each process's under its own pid.
  EXPECT_EQ(heap_by_pid(*heap, "parent_alloc"),
            (std::map<std::string, V>{{std::to_string(parent), {5, 5555, 5, 5555}}}));
  EXPECT_EQ(heap_by_pid(*heap, "child_alloc"),
            (std::map<std::string, V>{{std::to_string(child), {7, 15554, 7, 15554}}}))
      << describe_samples(*heap);
  const Json* mutex = profile_of(*capture, "mutex");
  ASSERT_NE(mutex, nullptr);
  auto waits = contentions_by_pid(*mutex, "child_contend");
  ASSERT_EQ(waits.size(), 1u) << describe_samples(*mutex);
  EXPECT_EQ(waits.begin()->first, std::to_string(child));
  // Every contended lock call went to the kernel, unless its holder let go in the instant
  // between the failed trylock and the lock (then the call took the fast path).
  EXPECT_LE(waits.begin()->second, contended);
  EXPECT_GE(waits.begin()->second, contended * 9 / 10) << describe_samples(*mutex);
  EXPECT_TRUE(outputs_valid(dir.path(), {{"heap", {"child_alloc"}}}));
}

TEST(ChildProbes, AChildIsProbedAgainAfterItsExecFromItsLibrariesConstructors) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  // "; true": the shell forks for heap_ctor instead of exec'ing it in place.
  RunResult r = run(run_argv({"--profiles", "heap", "--mem-rate", "1", "-o", dir.path()},
                             {"/bin/sh", "-c", std::string(HEAP_CTOR) + "; true"}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  // The new image's allocations, each once, unwound and named in its own modules: the
  // library constructor's from ld.so's _dl_init (the probes went in before it ran).
  const auto ctor = heap_by_pid(*heap, "ctor_alloc");
  ASSERT_EQ(ctor.size(), 1u) << describe_samples(*heap);
  const std::string child = ctor.begin()->first;
  EXPECT_NE(child, std::to_string(capture->at("target").value("pid", 0))) << "not the shell's";
  EXPECT_EQ(ctor.begin()->second, (V{1, 12345, 1, 12345}));
  EXPECT_EQ(heap_by_pid(*heap, "main_alloc"),
            (std::map<std::string, V>{{child, {10, 480, 10, 480}}}));
  for (const Json& s : heap->at("samples")) {
    if (has_function(s, "ctor_alloc")) {
      EXPECT_TRUE(has_function(s, "_dl_init")) << s.dump();
      EXPECT_EQ(label(s, "comm"), "heap_ctor");
    }
    if (has_function(s, "main_alloc")) {
      EXPECT_TRUE(stack_ends_with(s, then({"main_alloc"}, main_root()))) << s.dump();
    }
  }
}

TEST(ChildProbes, NoChildrenRecordsOnlyTheCommand) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  RunResult r = run(run_argv(
      {"--no-children", "--profiles", "heap", "--mem-rate", "1", "-o", dir.path()}, {HEAP_FORK}));
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  EXPECT_EQ(heap_by_pid(*heap, "parent_alloc"),
            (std::map<std::string, V>{{"", {5, 5555, 5, 5555}}}));
  EXPECT_TRUE(heap_by_pid(*heap, "child_alloc").empty()) << describe_samples(*heap);
}

TEST(ChildProbes, AttachChildrenLeavesAChildThatOutlivesTheCaptureAsItWas) {
  PROFCTL_REQUIRE_PROFCTL();
  Child server({HEAP_FORK, "server"});
  ASSERT_TRUE(server.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(server.pid(), {"--children", "--profiles", "heap,mutex", "--mem-rate",
                                         "1", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(server, p);
  const std::string forked = server.command("fork", milliseconds(60000)).value_or("(no reply)");
  const long long child = number_after(forked, "child");
  ASSERT_GT(child, 0) << forked;
  end_with_sigint(p);
  // The child ran with its own probes and is still alive: now it must be as before.
  EXPECT_EQ(server.command("check", milliseconds(30000)).value_or("(no reply)"), "clean=1");
  EXPECT_TRUE(untouched(server.pid()));

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  EXPECT_EQ(heap_by_pid(*heap, "child_alloc"),
            (std::map<std::string, V>{{std::to_string(child), {7, 15554, 7, 15554}}}))
      << describe_samples(*heap);
  const Json* mutex = profile_of(*capture, "mutex");
  ASSERT_NE(mutex, nullptr);
  const auto waits = contentions_by_pid(*mutex, "child_contend");
  EXPECT_EQ(waits.size(), 1u);
  EXPECT_GE(waits.count(std::to_string(child)) ? waits.at(std::to_string(child)) : 0,
            number_after(forked, "contended") * 9 / 10)
      << forked << "\n"
      << describe_samples(*mutex);
}

}  // namespace
}  // namespace profctl::testing::sampling
