// SPDX-License-Identifier: MIT
// The heap profile records the allocator the target really calls: glibc's, or jemalloc's,
// tcmalloc's, mimalloc's when preloaded (LD_PRELOAD, as servers are started) or linked
// (DT_NEEDED before libc), with their own entry points (mallocx..., tc_..., mi_...). One
// workload (alloc_any.c) reports its own allocations per function; profctl attached at
// --mem-rate 1 must record exactly those, and nothing else. An allocator whose malloc
// cannot be probed gives an empty heap profile and one line saying why. Entry points that
// call each other are sampled once per call.
// Targets: alloc_any.c (also linked against jemalloc), refused_malloc.S.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>

#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

namespace fs = std::filesystem;
using Values = std::vector<long long>;  // alloc_objects, alloc_space, inuse_objects, inuse_space

// The Debian packages' libraries (dpkg -L libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0).
constexpr const char* kLibDir = "/usr/lib/x86_64-linux-gnu/";

// "done F=A,B,C,D ..." -> F -> {A, B, C, D}.
std::map<std::string, Values> parse_truth(const std::string& line) {
  std::map<std::string, Values> out;
  std::istringstream in(line);
  std::string word;
  in >> word;  // "done"
  while (in >> word) {
    const size_t eq = word.find('=');
    Values v;
    std::istringstream nums(word.substr(eq + 1));
    std::string n;
    while (std::getline(nums, n, ',')) {
      v.push_back(std::stoll(n));
    }
    out[word.substr(0, eq)] = v;
  }
  return out;
}

// The raw values (the allocations themselves; at rate 1 also the scaled ones) summed over the
// samples whose stack holds `function`, or over all samples with "".
Values through(const Json& heap, const std::string& function) {
  Values sum(4, 0);
  for (const Json& s : heap.at("samples")) {
    if (function.empty() || has_function(s, function)) {
      for (size_t i = 0; i < 4; ++i) {
        sum[i] += s.at(s.contains("raw_values") ? "raw_values" : "values").at(i).get<long long>();
      }
    }
  }
  return sum;
}

std::string warnings_of(const Json& capture) {
  std::string all;
  for (const Json& w : capture.value("warnings", Json::array())) {
    all += w.get<std::string>() + "\n";
  }
  return all;
}

// Starts `argv` (alloc_any, maybe under env), checks it runs on `malloc_module`, attaches at
// rate 1, runs the workload once and returns the capture and the program's own tally.
struct Captured {
  std::optional<Json> capture;
  std::map<std::string, Values> truth;
};
void capture_workload(const std::vector<std::string>& argv, const std::string& malloc_module,
                      Captured& out) {
  Child target(argv);
  auto ready = target.wait_ready();
  ASSERT_TRUE(ready);
  // The process calls the allocator under test: otherwise the test would prove nothing.
  const size_t at = ready->find("malloc=");
  ASSERT_NE(at, std::string::npos) << *ready;
  std::error_code ec;
  ASSERT_TRUE(fs::equivalent(ready->substr(at + 7), malloc_module, ec)) << *ready;
  TempDir dir;
  BgProcess p(attach_argv(target.pid(), {"--profiles", "heap", "--mem-rate", "1", "-v", "-o",
                                         dir.path(), "--format", "json"}));
  start_and_wait_for_probes(target, p);
  auto done = target.command("run");
  ASSERT_TRUE(done && done->starts_with("done ")) << done.value_or("(no reply)");
  end_with_sigint(p);
  out.truth = parse_truth(*done);
  out.capture = load_capture(dir.path());
}

// Every function of the workload recorded exactly as the program counted it, and nothing
// else recorded: no allocation missed, none counted twice (an allocator's entry point that
// enters another probed one), none of another function.
void expect_exact(const std::vector<std::string>& argv, const std::string& malloc_module,
                  const std::string& api) {
  Captured c;
  capture_workload(argv, malloc_module, c);
  if (::testing::Test::HasFatalFailure()) {
    return;
  }
  ASSERT_TRUE(c.capture);
  if (!api.empty()) {
    ASSERT_TRUE(c.truth.contains(api)) << "the allocator's own API was not called: " << api;
  }
  EXPECT_EQ(warnings_of(*c.capture), "");
  const Json* heap = profile_of(*c.capture, "heap");
  ASSERT_NE(heap, nullptr);
  Values total(4, 0);
  for (const auto& [function, want] : c.truth) {
    EXPECT_EQ(through(*heap, function), want) << function << "\n" << describe_samples(*heap, 40);
    for (size_t i = 0; i < 4; ++i) {
      total[i] += want[i];
    }
  }
  EXPECT_EQ(through(*heap, ""), total) << describe_samples(*heap, 40);
}

std::string library(const std::string& name) {
  const std::string path = kLibDir + name;
  return fs::exists(path) ? path : "";
}

std::string absent(const std::string& name, const std::string& package) {
  return std::string(kLibDir) + name + " is absent: install " + package +
         " (scripts/install-deps.sh does)";
}

TEST(Allocators, GlibcIsRecordedExactly) {
  PROFCTL_REQUIRE_PROFCTL();
  expect_exact({ALLOC_ANY}, "/lib/x86_64-linux-gnu/libc.so.6", "");
}

TEST(Allocators, PreloadedJemallocIsRecordedExactly) {
  PROFCTL_REQUIRE_PROFCTL();
  const std::string so = library("libjemalloc.so.2");
  if (so.empty()) {
    GTEST_SKIP() << absent("libjemalloc.so.2", "libjemalloc2");
  }
  expect_exact({"/usr/bin/env", "LD_PRELOAD=" + so, ALLOC_ANY}, so, "je_api");
}

TEST(Allocators, PreloadedTcmallocIsRecordedExactly) {
  PROFCTL_REQUIRE_PROFCTL();
  const std::string so = library("libtcmalloc_minimal.so.4");
  if (so.empty()) {
    GTEST_SKIP() << absent("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4");
  }
  expect_exact({"/usr/bin/env", "LD_PRELOAD=" + so, ALLOC_ANY}, so, "tc_api");
}

TEST(Allocators, PreloadedMimallocIsRecordedExactly) {
  PROFCTL_REQUIRE_PROFCTL();
  const std::string so = library("libmimalloc.so.2");
  if (so.empty()) {
    GTEST_SKIP() << absent("libmimalloc.so.2", "libmimalloc2.0");
  }
  expect_exact({"/usr/bin/env", "LD_PRELOAD=" + so, ALLOC_ANY}, so, "mi_api");
}

TEST(Allocators, LinkedJemallocIsRecordedExactly) {
  PROFCTL_REQUIRE_PROFCTL();
  if (std::string(ALLOC_ANY_JEMALLOC).empty()) {
    GTEST_SKIP() << "alloc_any_jemalloc was not built: libjemalloc2 was not installed when "
                    "the build was configured";
  }
  const std::string so = library("libjemalloc.so.2");
  if (so.empty()) {
    GTEST_SKIP() << absent("libjemalloc.so.2", "libjemalloc2");
  }
  expect_exact({ALLOC_ANY_JEMALLOC}, so, "je_api");
}

// An allocator's entry points that call each other (tcmalloc's posix_memalign calls
// tc_memalign, mimalloc's valloc reaches mi_malloc_aligned, glibc's aligned functions
// malloc) are sampled once per call, as the function the program called: at a rate where
// most calls are not sampled, no sample of the inner function may appear below them, and
// the count is one draw's (p = 1 - exp(-1000/4096) per call).
void expect_one_draw_per_call(const std::vector<std::string>& argv) {
  constexpr int kCalls = 20000;
  Child target(argv);
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  // Small stack copies: 20,000 records of 16 KiB could fill the ring before profctl drains.
  BgProcess p(
      attach_argv(target.pid(), {"--profiles", "heap", "--mem-rate", "4096", "--probe-stack-bytes",
                                 "1K", "-v", "-o", dir.path(), "--format", "json"}));
  start_and_wait_for_probes(target, p);
  ASSERT_EQ(target.command("nest " + std::to_string(kCalls)), "done nest");
  end_with_sigint(p);
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  EXPECT_EQ(warnings_of(*capture), "");  // nothing dropped
  const double expected = kCalls * (1 - std::exp(-1000.0 / 4096));
  for (const auto& [caller, entry] :
       {std::pair{"nest_posix_memalign", "posix_memalign"}, std::pair{"nest_valloc", "valloc"}}) {
    long long sampled = 0;
    for (const Json& s : heap->at("samples")) {
      if (!has_function(s, caller)) {
        continue;
      }
      EXPECT_EQ(s.at("frames").at(0).value("function", ""), entry)
          << caller << ": sampled inside the call\n"
          << describe_samples(*heap, 10);
      sampled += s.at("raw_values").at(0).get<long long>();
    }
    EXPECT_NEAR(static_cast<double>(sampled), expected, 6 * std::sqrt(expected)) << caller;
  }
}

TEST(Allocators, EntryPointsThatCallEachOtherDrawOncePerCall) {
  PROFCTL_REQUIRE_PROFCTL();
  {
    SCOPED_TRACE("glibc");
    expect_one_draw_per_call({ALLOC_ANY});
  }
  for (const auto& [name, package] : {std::pair{"libjemalloc.so.2", "libjemalloc2"},
                                      std::pair{"libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"},
                                      std::pair{"libmimalloc.so.2", "libmimalloc2.0"}}) {
    SCOPED_TRACE(name);
    const std::string so = library(name);
    if (so.empty()) {
      std::printf("skipped: %s\n", absent(name, package).c_str());
      continue;
    }
    expect_one_draw_per_call({"/usr/bin/env", "LD_PRELOAD=" + so, ALLOC_ANY});
  }
}

TEST(Allocators, AnUnprobeableMallocLeavesTheProfileEmptyAndSaysWhy) {
  PROFCTL_REQUIRE_PROFCTL();
  const std::string so = fs::canonical(REFUSED_MALLOC).string();
  Captured c;
  capture_workload({"/usr/bin/env", "LD_PRELOAD=" + so, ALLOC_ANY}, so, c);
  if (::testing::Test::HasFatalFailure()) {
    return;
  }
  ASSERT_TRUE(c.capture);
  const Json* heap = profile_of(*c.capture, "heap");
  ASSERT_NE(heap, nullptr);
  EXPECT_EQ(heap->at("samples").size(), 0u) << describe_samples(*heap);
  // One line: the profile is empty, the function and module, and the relocator's reason.
  const std::string w = warnings_of(*c.capture);
  const std::string line = "heap: the profile is empty: malloc (" + so + ") cannot be probed: ";
  EXPECT_EQ(w.substr(0, line.size()), line) << w;
  EXPECT_EQ(std::count(w.begin(), w.end(), '\n'), 1) << w;
}

}  // namespace
}  // namespace profctl::testing::sampling
