// SPDX-License-Identifier: MIT
// The heap profile on real processes: an exactly known workload recorded exactly, each
// allocation with its whole stack, at --mem-rate 1; the target restored byte for byte after
// SIGINT, SIGTERM, SIGHUP and SIGKILL of profctl; children forked while the probes are in;
// 8 threads allocating flat out; exec; the target exiting while probed; 2000 queued signals
// to an allocating thread; the scaled estimates at the default and a mid rate within the
// sampling's statistical error; a function that cannot take a jump (breakpoint fallback).
// Targets: heap_target.c, heap_int3.c.
#include <gtest/gtest.h>
#include <signal.h>
#include <string.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "sampling_support.h"
#include "support/procfs.h"

namespace profctl::testing::sampling {
namespace {

using Clock = std::chrono::steady_clock;

// The profiles every test here captures, in one place: the same safety tests are meant to
// run with every probe-based profile at once (heap,block,mutex).
// The profiles these tests arm: the heap's probes, or (PROFCTL_TEST_PROBE_PROFILES, set by
// the HeapSafetyWithWaitsArmed ctest entry) the block and mutex probes beside them, so that
// every safety property is checked with every kind of probe in the target.
const std::string kProfiles = [] {
  const char* env = std::getenv("PROFCTL_TEST_PROBE_PROFILES");
  return std::string(env != nullptr && *env != '\0' ? env : "heap");
}();

std::string maps_of(pid_t pid) {
  return read_text("/proc/" + std::to_string(pid) + "/maps").value_or("");
}

// Every executable file mapping of the target reads exactly as its file: no patched byte
// is left (the probes patch libc's and the executable's text).
::testing::AssertionResult text_matches_files(pid_t pid) {
  std::istringstream maps(maps_of(pid));
  std::string line;
  std::ifstream mem("/proc/" + std::to_string(pid) + "/mem", std::ios::binary);
  size_t checked = 0;
  while (std::getline(maps, line)) {
    unsigned long long lo = 0, hi = 0, off = 0;
    char perms[8] = {};
    char path[512] = {};
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %llx %*s %*s %511s", &lo, &hi, perms, &off, path) <
            5 ||
        perms[2] != 'x' || path[0] != '/') {
      if (line.find("profctl-probe") != std::string::npos) {
        return ::testing::AssertionFailure() << "a probe mapping is left: " << line;
      }
      continue;
    }
    std::string in_memory(hi - lo, '\0');
    mem.clear();
    mem.seekg(static_cast<std::streamoff>(lo));
    mem.read(in_memory.data(), static_cast<std::streamsize>(in_memory.size()));
    std::ifstream file(path, std::ios::binary);
    std::string on_disk(hi - lo, '\0');
    file.seekg(static_cast<std::streamoff>(off));
    file.read(on_disk.data(), static_cast<std::streamsize>(on_disk.size()));
    const size_t n = static_cast<size_t>(std::min(mem.gcount(), file.gcount()));
    for (size_t i = 0; i < n; ++i) {
      if (in_memory[i] != on_disk[i]) {
        return ::testing::AssertionFailure()
               << path << " differs from its file at +0x" << std::hex << (off + i);
      }
    }
    checked += n;
  }
  if (checked == 0) {
    return ::testing::AssertionFailure() << "no executable mapping was compared";
  }
  return ::testing::AssertionSuccess();
}

// The whole stack of an allocation of heap_target.c (or heap_int3.c), innermost first: the
// allocator's entry, where the probe records the thread, the target's noinline functions
// from the innermost out, and the root of the main thread or of a pthread_create thread.
// The probes walk the stack in the target (ABI v7), whole whatever --probe-stack-bytes says
// (that bounds only the copy a walk that cannot finish falls back to).
std::vector<std::string> on_main(std::vector<std::string> innermost) {
  return then(std::move(innermost), main_root());
}
std::vector<std::string> on_thread(std::vector<std::string> innermost) {
  return then(std::move(innermost), thread_root());
}

// Every heap sample that names `function` has one of `stacks` as its whole stack: a frame
// missing, misplaced or extra, or the wrong allocator, fails.
::testing::AssertionResult only_stacks(const Json& heap, const std::string& function,
                                       const std::vector<std::vector<std::string>>& stacks) {
  for (const Json& s : heap.at("samples")) {
    if (!has_function(s, function)) {
      continue;
    }
    ::testing::AssertionResult why = ::testing::AssertionFailure();
    bool matched = false;
    for (const auto& stack : stacks) {
      if (auto r = stack_is(s, stack); r) {
        matched = true;
      } else {
        why << r.message() << "\n";
      }
    }
    if (!matched) {
      return why << "(a sample of " << function << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

// The heap samples whose whole stack is `stack`, summed: values in Go's order (scaled
// estimates), or with key "raw_values" the sampled allocations themselves.
std::vector<long long> heap_values_at(const Json& heap, const std::vector<std::string>& stack,
                                      const char* key = "values") {
  std::vector<long long> sum(4, 0);
  for (const Json& s : heap.at("samples")) {
    if (stack_is(s, stack)) {
      for (size_t i = 0; i < 4; ++i) {
        sum[i] += s.at(s.contains(key) ? key : "values").at(i).get<long long>();
      }
    }
  }
  return sum;
}

// heap_values_at, after checking that every sample of the allocating function (stack[1],
// the allocator's caller) has exactly that stack.
std::vector<long long> heap_values_of(const Json& heap, const std::vector<std::string>& stack,
                                      const char* key = "values") {
  EXPECT_TRUE(only_stacks(heap, stack.at(1), {stack}));
  return heap_values_at(heap, stack, key);
}

// The six functions of one round of "run", each with its whole stack (never freed: exit
// does not free them). alloc_realloc's malloc(64) blocks are moved by realloc, which frees
// them: the realloc's blocks are the live ones.
void expect_one_exact_round(const Json& heap) {
  using V = std::vector<long long>;
  // alloc_objects, alloc_space, inuse_objects, inuse_space per allocating stack.
  EXPECT_EQ(heap_values_of(heap, on_main({"malloc", "alloc_small"})), (V{100, 10000, 100, 10000}));
  EXPECT_EQ(heap_values_of(heap, on_main({"malloc", "alloc_freed"})), (V{50, 204800, 0, 0}));
  EXPECT_EQ(heap_values_of(heap, on_main({"calloc", "alloc_calloc"})), (V{20, 5120, 20, 5120}));
  const auto realloc_malloc = on_main({"malloc", "alloc_realloc"});
  const auto realloc_realloc = on_main({"realloc", "alloc_realloc"});
  EXPECT_TRUE(only_stacks(heap, "alloc_realloc", {realloc_malloc, realloc_realloc}));
  EXPECT_EQ(heap_values_at(heap, realloc_malloc), (V{10, 10 * 64, 0, 0}));
  EXPECT_EQ(heap_values_at(heap, realloc_realloc), (V{10, 10 * 8192, 10, 81920}));
  EXPECT_EQ(heap_values_of(heap, on_main({"posix_memalign", "alloc_aligned"})),
            (V{5, 5000, 5, 5000}));
  EXPECT_EQ(heap_values_of(heap, on_thread({"malloc", "alloc_thread"})), (V{30, 6000, 30, 6000}));
}

long long heap_counter(const Json& heap, const std::string& name) {
  return heap.value("counters", Json::object()).value(name, 0LL);
}

TEST(Heap, AnExactWorkloadIsRecordedExactlyAtRate1AndTheTargetIsRestored) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(target.pid(),
                          {"--profiles", kProfiles, "--mem-rate", "1", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  ASSERT_EQ(target.command("run"), "done round=1");
  end_with_sigint(p);
  // Restored: no probe mapping, every text byte as in its file, and it still allocates.
  EXPECT_TRUE(text_matches_files(target.pid()));
  EXPECT_EQ(target.command("run"), "done round=2");

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  expect_one_exact_round(*heap);
  EXPECT_TRUE(outputs_valid(dir.path(), {{"heap", {"alloc_small", "alloc_thread"}}}));
}

TEST(Heap, ChildrenForkedWhileProbedRunCorrectly) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(target.pid(),
                          {"--profiles", kProfiles, "--mem-rate", "64", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  EXPECT_EQ(target.command("fork 50", milliseconds(60000)), "done fork ok=50");
  end_with_sigint(p);
  EXPECT_TRUE(text_matches_files(target.pid()));
}

TEST(Heap, EightThreadsAllocatingFlatOutAreCountedOrTheirDropsAre) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  // Nothing is dropped: a writer that finds the ring full waits for room.
  BgProcess p(attach_argv(target.pid(), {"--profiles", kProfiles, "--mem-rate", "1",
                                         "--probe-stack-bytes", "1K", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  ASSERT_EQ(target.command("churn 8 5000", milliseconds(120000)), "done churn")
      << "the target died: " << describe_tasks(target.pid());
  end_with_sigint(p);
  EXPECT_TRUE(text_matches_files(target.pid()));
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  const auto churn = heap_values_of(*heap, on_thread({"malloc", "churn_loop"}));
  const long long recorded = churn[0];
  const Json counters = heap->value("counters", Json::object());
  const long long dropped =
      counters.value("ring_dropped", 0LL) + counters.value("queue_dropped", 0LL);
  EXPECT_EQ(dropped, 0);
  EXPECT_EQ(recorded, 8 * 5000) << "recorded " << recorded << " dropped " << dropped;
  EXPECT_EQ(churn[2], 0) << "every churn allocation was freed";
}

TEST(Heap, SigkillOfProfctlLeavesTheTargetAllocatingCorrectly) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  for (int round = 1; round <= 20; ++round) {
    BgProcess p(attach_argv(target.pid(), {"--profiles", kProfiles, "--mem-rate", "4096", "-v"}));
    start_and_wait_for_probes(target, p);
    if (round % 2 == 0) {
      ASSERT_EQ(target.command("run"), "done round=" + std::to_string(round / 2));
    }
    p.signal(SIGKILL);
    ASSERT_TRUE(p.wait_exit(milliseconds(10000)));
    ASSERT_TRUE(wait_untraced(target.pid()));
  }
  // The jumps stay after a SIGKILL (the trampolines keep running, dropping what the full
  // ring cannot take): the target must go on allocating and freeing correctly.
  EXPECT_EQ(target.command("run"), "done round=11");
  EXPECT_EQ(target.command("fork 5", milliseconds(60000)), "done fork ok=5");
  EXPECT_EQ(target.command("churn 4 20000", milliseconds(120000)), "done churn");
}

TEST(Heap, ExecEndsTheHeapProfileCleanly) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(target.pid(),
                          {"--profiles", kProfiles, "--mem-rate", "1", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  ASSERT_EQ(target.command("run"), "done round=1");
  target.command("exec", milliseconds(2000));  // no reply: it becomes /bin/true and exits
  auto st = p.wait_exit(milliseconds(60000));
  ASSERT_TRUE(st) << p.err();
  EXPECT_EQ(exit_code_of(*st), 0) << p.err();  // the capture ends at the exec, as sampling does
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  EXPECT_EQ(heap_values_of(*heap, on_main({"malloc", "alloc_small"}))[0], 100)
      << describe_samples(*heap) << "\n"
      << p.err();
  EXPECT_NE(capture->dump().find("the heap profile ends there"), std::string::npos)
      << "no note of the exec";
}

TEST(Heap, AFunctionThatCannotTakeAJumpIsProbedWithABreakpointAndRecordedExactly) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  auto r = run({PROFCTL_BIN, "run", "--profiles", kProfiles, "--mem-rate", "1", "-o", dir.path(),
                "--", HEAP_INT3, "100"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  using V = std::vector<long long>;
  // The innermost frame is heap_int3's own malloc, where the breakpoint is.
  EXPECT_EQ(heap_values_of(*heap, on_main({"malloc", "malloc_from_here"})),
            (V{100, 4800, 100, 4800}));
  for (const Json& s : heap->at("samples")) {
    if (has_function(s, "malloc_from_here")) {
      EXPECT_TRUE(s.at("frames").at(0).value("module", "").ends_with("/heap_int3")) << s.dump();
    }
  }
  EXPECT_NE(capture->dump().find("breakpoint"), std::string::npos)
      << "the fallback is not reported";
}

TEST(Heap, RunRecordsTheAllocationsOfALibrarysConstructor) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  auto r = run({PROFCTL_BIN, "run", "--profiles", kProfiles, "--mem-rate", "1", "-o", dir.path(),
                "--", HEAP_CTOR});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  using V = std::vector<long long>;
  // libheap_ctor_lib.so's constructor ran before the program's entry point, from ld.so's
  // _dl_init; main's allocations after it. Each exactly once, nothing lost.
  // (call_init is inlined into _dl_init once, and its own copy too: libc6-dbg's DWARF.)
  EXPECT_EQ(heap_values_of(*heap, {"malloc", "ctor_alloc", "heap_ctor_lib_init", "call_init",
                                   "call_init", "_dl_init", "_dl_start_user"}),
            (V{1, 12345, 1, 12345}))
      << heap->dump();
  EXPECT_EQ(heap_values_of(*heap, on_main({"malloc", "main_alloc"})), (V{10, 480, 10, 480}));
}

// --- Statistics of the sampled profile --------------------------------------------------
//
// The target draws the bytes to its next sample from an exponential distribution of mean
// `rate` (a Poisson process over allocated bytes, Go's MemProfileRate). The distribution is
// memoryless, so each allocation of s bytes is recorded independently with probability
// p = 1 - exp(-s/rate): of n allocations, the recorded number k is Binomial(n, p), and the
// profile's scaled count k/p (Go's scaleHeapSample) has mean n and standard deviation
// sqrt(n (1 - p) / p) -- about n / sqrt(bytes / rate) when s << rate: the number of samples
// expected is bytes/rate and the relative error is 1/sqrt(samples). The bytes are the count
// times s (one size), with the same relative error. Kept and freed blocks are recorded
// independently, so the in-use estimate is that of the kept blocks alone.
//
// The tests allow 5 standard deviations: a correct profiler falls outside about once in
// 1.7 million runs (normal approximation; the smallest case has ~500 samples), so they are
// not flaky, while a wrong scale, a wrong rate, lost records or uncharged frees are many
// deviations away.
struct Estimate {
  double mean = 0;  // what the scaled count estimates: the true count
  double sd = 0;    // standard deviation of the scaled count
};

Estimate scaled_count(double count, double size, double rate) {
  const double p = -std::expm1(-size / rate);
  return {count, std::sqrt(count * (1 - p) / p)};
}

constexpr double kDeviations = 5;

// `bulk N SIZE KEEP` (alloc_bulk: N x malloc(SIZE), every KEEP-th kept) under a heap capture
// at `rate` (0: the default, no --mem-rate given); the scaled alloc_objects, alloc_space,
// inuse_objects and inuse_space of alloc_bulk are within kDeviations standard deviations of
// the truth. `max_relative` is what the test promises about its own bounds: 5 sd must stay
// within that fraction of the truth, or the workload is too small to mean anything.
void expect_bulk_estimates(uint64_t rate, long n, long size, long keep_every,
                           double max_relative_alloc, double max_relative_inuse) {
  const double effective_rate = rate == 0 ? 512 * 1024 : static_cast<double>(rate);
  const long kept = (n + keep_every - 1) / keep_every;
  const Estimate alloc = scaled_count(n, size, effective_rate);
  const Estimate inuse = scaled_count(kept, size, effective_rate);
  ASSERT_LE(kDeviations * alloc.sd, max_relative_alloc * alloc.mean);
  ASSERT_LE(kDeviations * inuse.sd, max_relative_inuse * inuse.mean);

  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  // Small stack copies: at the mid rate the ~13 k records fit the ring many times over.
  std::vector<std::string> args = {"--profiles", kProfiles, "--probe-stack-bytes", "1K", "-v",
                                   "-o",         dir.path()};
  if (rate != 0) {
    args.insert(args.end(), {"--mem-rate", std::to_string(rate)});
  }
  BgProcess p(attach_argv(target.pid(), args));
  start_and_wait_for_probes(target, p);
  ASSERT_EQ(target.command("bulk " + std::to_string(n) + " " + std::to_string(size) + " " +
                               std::to_string(keep_every),
                           milliseconds(120000)),
            "done bulk kept=" + std::to_string(kept));
  end_with_sigint(p);
  EXPECT_TRUE(text_matches_files(target.pid()));

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  EXPECT_EQ(heap->value("period", 0LL), static_cast<long long>(effective_rate));
  // A dropped record would bias the estimate low: there must be none at these volumes.
  EXPECT_EQ(heap_counter(*heap, "ring_dropped"), 0);
  EXPECT_EQ(heap_counter(*heap, "table_dropped"), 0);
  const auto bulk = on_main({"malloc", "alloc_bulk"});
  const auto v = heap_values_of(*heap, bulk);
  const auto raw = heap_values_at(*heap, bulk, "raw_values");
  const std::string why = "sampled " + std::to_string(raw[0]) + " allocations (" +
                          std::to_string(raw[2]) + " live) of " + std::to_string(n) + " x " +
                          std::to_string(size) + " B at rate " +
                          std::to_string(static_cast<long long>(effective_rate)) +
                          "; allowed: alloc +-" + std::to_string(kDeviations * alloc.sd) +
                          ", inuse +-" + std::to_string(kDeviations * inuse.sd) + " objects";
  EXPECT_NEAR(v[0], alloc.mean, kDeviations * alloc.sd) << "alloc_objects; " << why;
  EXPECT_NEAR(v[1], alloc.mean * size, kDeviations * alloc.sd * size) << "alloc_space; " << why;
  EXPECT_NEAR(v[2], inuse.mean, kDeviations * inuse.sd) << "inuse_objects; " << why;
  EXPECT_NEAR(v[3], inuse.mean * size, kDeviations * inuse.sd * size) << "inuse_space; " << why;
  // Each row's estimates are its sampled values scaled as Go's scaleHeapSample does, count
  // and bytes each truncated on its own (one size here, so the factor is 1/p exactly).
  const double scale = 1 / (1 - std::exp(-static_cast<double>(size) / effective_rate));
  for (const Json& s : heap->at("samples")) {
    if (!has_function(s, "alloc_bulk")) {
      continue;
    }
    ASSERT_TRUE(s.contains("raw_values")) << s.dump();
    for (size_t i = 0; i < 4; ++i) {
      const double sampled = s.at("raw_values").at(i).get<double>();
      EXPECT_EQ(s.at("values").at(i).get<long long>(), static_cast<long long>(sampled * scale))
          << "value " << i << " of " << s.dump();
    }
  }
}

// 1 GiB in 8 KiB blocks at 512 KiB: ~2000 samples, ~500 of the kept quarter; 5 sd is 11%
// of alloc and 22% of inuse.
TEST(Heap, TheDefaultRateEstimatesAGigabyteOfAllocationsWithinTheSamplingError) {
  PROFCTL_REQUIRE_PROFCTL();
  expect_bulk_estimates(0, 131072, 8192, 4, 0.12, 0.23);
}

// 80 MiB in 4 KiB blocks at 4096: ~12600 samples, ~3200 live; 5 sd is 2.7% and 5.4%.
TEST(Heap, AMidRateEstimatesWithinTighterBounds) {
  PROFCTL_REQUIRE_PROFCTL();
  expect_bulk_estimates(4096, 20000, 4096, 4, 0.03, 0.06);
}

// --- The target ends while the probes are in --------------------------------------------

// exit() with two more threads inside malloc/free flat out: profctl sees the target go, ends
// with 3 ("the target went away", README/man), with no hang, and writes the capture with
// what was allocated before; the target's exit itself is clean (status 0, not a crash in a
// probe on the way out).
using V4 = std::array<long long, 4>;

// "N label" in profctl's -v line about the probes: the number before `label`, -1 if absent.
long long probe_stat(const std::string& err, const std::string& label) {
  const auto at = err.find(" " + label);
  if (at == std::string::npos) {
    return -1;
  }
  const auto start = err.find_last_of(' ', at - 1);
  return std::atoll(err.c_str() + (start == std::string::npos ? 0 : start + 1));
}

// Every call recorded (--mem-rate 1) by a loop that allocates as fast as it can, through a
// ring so small (64 KiB, ~800 records) that the target must wait for profctl again and
// again: nothing is dropped, the counts are the program's own, every stack is whole and was
// walked in the target (no stack copy, no unwinding in profctl).
TEST(Heap, RateOneKeepsEveryCallOfABusyLoopAndDropsNothing) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(target.pid(), {"--profiles", "heap", "--mem-rate", "1",
                                         "--probe-ring-bytes", "64K", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  constexpr long kCalls = 300000;
  ASSERT_EQ(target.command("bulk " + std::to_string(kCalls) + " 48 100", milliseconds(120000)),
            "done bulk kept=" + std::to_string(kCalls / 100));
  end_with_sigint(p);

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  EXPECT_EQ(heap_counter(*heap, "ring_dropped"), 0);
  EXPECT_EQ(heap_counter(*heap, "queue_dropped"), 0);
  using V = std::vector<long long>;
  EXPECT_EQ(heap_values_of(*heap, on_main({"malloc", "alloc_bulk"}), "raw_values"),
            (V{kCalls, kCalls * 48, kCalls / 100, kCalls / 100 * 48}));
  const std::string err = p.err();
  EXPECT_GE(probe_stat(err, "stacks walked in the target"), kCalls) << err;
  EXPECT_EQ(probe_stat(err, "copied for profctl to unwind"), 0) << err;
  EXPECT_GT(probe_stat(err, "records waited for room in the ring"), 0)
      << "the ring never filled: the test did not test the wait\n"
      << err;
  EXPECT_EQ(probe_stat(err, "dropped while profctl"), 0) << err;
}

// The blob skips a walk when the thread's last one read the same words (its memo): two
// callers alike enough that every malloc entry has the same rsp and return address, called
// in turn, must still get two stacks, each with exactly its own calls.
TEST(Heap, AlternatingCallersWithTheSameFramesKeepTheirOwnStacks) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(
      attach_argv(target.pid(), {"--profiles", "heap", "--mem-rate", "1", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  constexpr long kCalls = 20000;
  ASSERT_EQ(target.command("twins " + std::to_string(kCalls), milliseconds(60000)), "done twins");
  end_with_sigint(p);
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  using V = std::vector<long long>;
  for (const char* twin : {"twin_a", "twin_b"}) {
    EXPECT_EQ(
        heap_values_at(*heap, on_main({"malloc", "alloc_twin", twin, "run_twins"}), "raw_values"),
        (V{kCalls, kCalls * 72, 0, 0}))
        << twin;
  }
  EXPECT_TRUE(only_stacks(*heap, "alloc_twin",
                          {on_main({"malloc", "alloc_twin", "twin_a", "run_twins"}),
                           on_main({"malloc", "alloc_twin", "twin_b", "run_twins"})}));
  EXPECT_GE(probe_stat(p.err(), "stacks walked in the target"), 2 * kCalls) << p.err();
}

// The stacks the target walks with the compiled tables are libdwfl's: one round of known
// allocations captured with the walk and again with stack copies unwound by libdwfl alone
// (PROFCTL_PROBE_WALK=0 PROFCTL_UNWIND_TABLES=0) gives the same samples, pc for pc.
TEST(Heap, StacksWalkedInTheTargetAreTheOnesLibdwflFinds) {
  PROFCTL_REQUIRE_PROFCTL();
  auto samples = [](const std::vector<std::string>& env, int round) {
    std::map<std::string, V4> out;
    Child target({HEAP_TARGET});
    EXPECT_TRUE(target.wait_ready());
    TempDir dir;
    std::vector<std::string> argv = {"/usr/bin/env"};
    argv.insert(argv.end(), env.begin(), env.end());
    for (auto& a : attach_argv(target.pid(),
                               {"--profiles", "heap", "--mem-rate", "1", "-v", "-o", dir.path()})) {
      argv.push_back(a);
    }
    BgProcess p(argv);
    start_and_wait_for_probes(target, p);
    EXPECT_EQ(target.command("run"), "done round=1");
    end_with_sigint(p);
    if (round == 0) {
      EXPECT_GE(probe_stat(p.err(), "stacks walked in the target"), 215) << p.err();
    } else {
      EXPECT_EQ(probe_stat(p.err(), "stacks walked in the target"), 0) << p.err();
    }
    auto capture = load_capture(dir.path());
    EXPECT_TRUE(capture);
    const Json* heap = capture ? profile_of(*capture, "heap") : nullptr;
    if (heap == nullptr) {
      ADD_FAILURE() << "no heap profile";
      return out;
    }
    // Keyed by the whole stack as module+offset (the same files at other addresses).
    for (const Json& s : heap->at("samples")) {
      std::string key;
      for (const Json& f : s.value("frames", Json::array())) {
        key += f.value("module", "?") + "+" + f.value("offset", "?") + " " +
               f.value("function", "?") + "\n";
      }
      for (size_t i = 0; i < 4; ++i) {
        out[key][i] += s.at("raw_values").at(i).get<long long>();
      }
    }
    return out;
  };
  const auto walked = samples({}, 0);
  const auto unwound = samples({"PROFCTL_PROBE_WALK=0", "PROFCTL_UNWIND_TABLES=0"}, 1);
  ASSERT_FALSE(walked.empty());
  EXPECT_EQ(walked, unwound);
}

// What heaptrack recorded, read from its data file (zstd-compressed text; numbers in hex,
// indices 1-based into the earlier lines of their kind): `s LEN TEXT` a string, `i IP
// MODULE [FUNCTION FILE LINE]...` an ip, `t IP PARENT` a trace, `a SIZE TRACE` an allocation
// kind, `+ KIND` one allocation (0-based into the `a` lines). A trace's first ip is the
// allocator's caller: the site, named (module file name, function or "").
// A module's file name without its version: heaptrack names the soname link
// (libstdc++.so.6), profctl the file (libstdc++.so.6.0.30).
std::string module_name(const std::string& path) {
  std::string name = std::filesystem::path(path).filename().string();
  if (const auto so = name.find(".so."); so != std::string::npos) {
    name.resize(so + 3);
  }
  return name;
}

struct Site {
  long long calls = 0;
  long long bytes = 0;
};

struct HeaptrackData {
  long long calls = 0;
  long long bytes = 0;
  std::map<std::pair<std::string, std::string>, Site> sites;
};

std::optional<HeaptrackData> read_heaptrack(const std::string& zst) {
  auto text = run({"/usr/bin/zstdcat", zst}, {.timeout = milliseconds(60000), .uid = {}});
  if (text.exit_code != 0) {
    return std::nullopt;
  }
  std::vector<std::string> strings{""};
  std::vector<std::pair<size_t, size_t>> ips{{0, 0}};  // (module, function) string indices
  std::vector<size_t> traces{0};                       // trace -> ip
  std::vector<std::pair<long long, size_t>> kinds;     // (size, trace)
  std::map<size_t, long long> per_kind;                // allocations of each kind
  HeaptrackData d;
  std::istringstream in(text.out);
  std::string line;
  auto hex = [](const std::string& w) { return std::stoull(w, nullptr, 16); };
  while (std::getline(in, line)) {
    if (line.size() < 2 || line[1] != ' ') {
      continue;
    }
    std::istringstream f(line.substr(2));
    std::string a, b, c;
    switch (line[0]) {
      case '+':
        f >> a;
        if (hex(a) >= kinds.size()) {
          return std::nullopt;
        }
        ++d.calls;
        d.bytes += kinds[hex(a)].first;
        ++per_kind[hex(a)];
        break;
      case 'a':
        f >> a >> b;
        kinds.emplace_back(static_cast<long long>(hex(a)), hex(b));
        break;
      case 't':
        f >> a >> b;
        traces.push_back(hex(a));
        break;
      case 'i':
        f >> a >> b >> c;
        ips.emplace_back(hex(b), c.empty() ? 0 : hex(c));
        break;
      case 's':
        strings.push_back(line.substr(std::min(line.size(), line.find(' ', 2) + 1)));
        break;
      default:
        break;
    }
  }
  for (const auto& [kind, n] : per_kind) {
    const size_t trace = kinds[kind].second;
    const size_t ip = trace < traces.size() ? traces[trace] : 0;
    const auto [module, function] = ip < ips.size() ? ips[ip] : std::pair<size_t, size_t>{};
    const std::string path = module < strings.size() ? strings[module] : "";
    Site& site = d.sites[{module_name(path), function < strings.size() ? strings[function] : ""}];
    site.calls += n;
    site.bytes += n * kinds[kind].first;
  }
  return d;
}

// A real program at --mem-rate 1, beside the tool people use for this: CPython building and
// sorting a dict (python3.11 itself; its small objects come from its own pool allocator, its
// dict and list storage from malloc). Every call heaptrack counts, profctl records, to
// within 0.5% (heaptrack's own start-up allocates), the bytes too, nothing dropped, the
// stacks walked in the target, and heaptrack's five most frequent sites (the allocator's
// caller) with the same counts.
TEST(HeapRealPrograms, CPythonAllocatesWhatHeaptrackCounts) {
  PROFCTL_REQUIRE_PROFCTL();
  const std::string python = "/usr/bin/python3";
  const std::string script =
      "d = {}\nfor i in range(100000):\n    d['k%d' % i] = [i, str(i), (i, i * 2)]\n"
      "items = sorted(d.items(), key=lambda kv: kv[1][1])\nprint(len(items))\n";
  TempDir dir;
  const std::string py = dir.path() + "/work.py";
  { std::ofstream(py) << script; }
  // heaptrack (LD_PRELOAD from the start; its data through heaptrack_print's summary).
  const std::string ht = dir.path() + "/ht";
  auto h = run({"/usr/bin/heaptrack", "-o", ht, python, py},
               {.timeout = milliseconds(120000), .uid = {}});
  ASSERT_EQ(h.exit_code, 0) << h.describe();
  std::string zst;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    if (e.path().filename().string().rfind("ht.", 0) == 0) {
      zst = e.path().string();
    }
  }
  ASSERT_FALSE(zst.empty()) << "heaptrack wrote no data: " << h.err;
  auto printed =
      run({"/usr/bin/heaptrack_print", zst}, {.timeout = milliseconds(120000), .uid = {}});
  ASSERT_EQ(printed.exit_code, 0) << printed.describe();
  const auto at = printed.out.find("calls to allocation functions: ");
  ASSERT_NE(at, std::string::npos) << printed.out.substr(0, 2000);
  const long long heaptrack_calls = std::atoll(printed.out.c_str() + at + 31);
  ASSERT_GT(heaptrack_calls, 500);

  const std::string out = dir.path() + "/profctl";
  auto r = run({PROFCTL_BIN, "run", "--profiles", "heap", "--mem-rate", "1", "-v", "-o", out, "--",
                python, py},
               {.timeout = milliseconds(120000), .uid = {}});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto capture = load_capture(out);
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  long long calls = 0;
  for (const Json& sample : heap->at("samples")) {
    calls += sample.at("raw_values").at(0).get<long long>();
  }
  EXPECT_EQ(heap_counter(*heap, "ring_dropped"), 0);
  EXPECT_NEAR(static_cast<double>(calls), static_cast<double>(heaptrack_calls),
              0.005 * static_cast<double>(heaptrack_calls))
      << "profctl recorded " << calls << " allocation calls, heaptrack counted " << heaptrack_calls;
  EXPECT_GT(probe_stat(r.err, "stacks walked in the target"), calls / 2) << r.err;

  auto data = read_heaptrack(zst);
  ASSERT_TRUE(data) << "heaptrack's data could not be read: " << zst;
  ASSERT_EQ(data->calls, heaptrack_calls) << "the data file and heaptrack_print disagree";
  long long bytes = 0;
  // Sites as heaptrack names them: the caller's module and its innermost function at the
  // call (inlined functions share the pc), where heaptrack could name one.
  std::map<std::pair<std::string, std::set<std::string>>, long long> sites;
  for (const Json& sample : heap->at("samples")) {
    const long long n = sample.at("raw_values").at(0).get<long long>();
    bytes += sample.at("raw_values").at(1).get<long long>();
    const Json& frames = sample.at("frames");
    if (frames.size() < 2) {
      continue;
    }
    std::set<std::string> names;
    for (size_t i = 1; i < frames.size() && frames[i].value("pc", "") == frames[1].value("pc", "");
         ++i) {
      if (frames[i].contains("function") && frames[i]["function"].is_string()) {
        names.insert(frames[i]["function"].get<std::string>());
      }
    }
    sites[{module_name(frames[1].value("module", "")), names}] += n;
  }
  // heaptrack's own libraries allocate in the program (its preload library pulls in
  // libstdc++, whose constructor allocates its 72,704-byte exception pool): sites in
  // modules the program never mapped are heaptrack's, not the program's.
  std::set<std::string> mapped;
  for (const Json& m : capture->value("modules", Json::array())) {
    mapped.insert(module_name(m.value("path", "")));
  }
  long long heaptrack_bytes = 0;
  std::vector<std::pair<long long, std::pair<std::string, std::string>>> top;
  for (const auto& [site, n] : data->sites) {
    if (mapped.count(site.first) != 0) {
      heaptrack_bytes += n.bytes;
      top.emplace_back(n.calls, site);
    }
  }
  EXPECT_NEAR(static_cast<double>(bytes), static_cast<double>(heaptrack_bytes),
              0.005 * static_cast<double>(heaptrack_bytes))
      << "profctl recorded " << bytes << " bytes asked for, heaptrack " << heaptrack_bytes
      << " (of " << data->bytes << ")";
  std::sort(top.rbegin(), top.rend());
  top.resize(std::min<size_t>(top.size(), 5));
  ASSERT_EQ(top.size(), 5u);
  for (const auto& [n, site] : top) {
    const auto& [module, function] = site;
    long long ours = 0;
    std::set<std::string> named;  // every function heaptrack named in this module
    for (const auto& [s, m] : data->sites) {
      if (s.first == module && !s.second.empty()) {
        named.insert(s.second);
      }
    }
    for (const auto& [key, m] : sites) {
      if (key.first != module) {
        continue;
      }
      // heaptrack's unnamed sites of a module are one: ours whose names it never gave.
      const bool same = function.empty()
                            ? std::none_of(key.second.begin(), key.second.end(),
                                           [&](const std::string& f) { return named.count(f); })
                            : key.second.count(function) > 0;
      ours += same ? m : 0;
    }
    EXPECT_EQ(ours, n) << "allocations from " << (function.empty() ? "?" : function) << " in "
                       << module;
  }
}

TEST(Heap, TheTargetExitingWhileProbedEndsWithCode3AndKeepsItsAllocations) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(target.pid(), {"--profiles", kProfiles, "--mem-rate", "1",
                                         "--probe-stack-bytes", "1K", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  ASSERT_EQ(target.command("run"), "done round=1");
  ASSERT_EQ(target.command("spin 2"), "done spin");
  std::this_thread::sleep_for(milliseconds(100));              // the spinners are in the probes
  EXPECT_FALSE(target.command("exit 0", milliseconds(1000)));  // no reply: it exits
  auto st = p.wait_exit(milliseconds(60000));
  ASSERT_TRUE(st) << "profctl did not end after the target's exit: " << p.err();
  EXPECT_EQ(exit_code_of(*st), 3) << p.describe_status() << "\n" << p.err();
  ASSERT_TRUE(wait_until([&] { return !target.alive(); }, milliseconds(10000)));
  ASSERT_TRUE(target.wait_status());
  EXPECT_TRUE(WIFEXITED(*target.wait_status()) && WEXITSTATUS(*target.wait_status()) == 0)
      << "the target's exit status is " << *target.wait_status();

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  expect_one_exact_round(*heap);
  EXPECT_GT(heap_values_of(*heap, on_thread({"malloc", "spin_alloc", "spin_main"}))[0], 0)
      << "the spinners were not recorded";
  EXPECT_TRUE(outputs_valid(dir.path(), {{"heap", {"alloc_small", "alloc_thread"}}}));
}

// The same under `profctl run`: profctl exits with the program's own status.
TEST(Heap, TheProgramExitingUnderRunGivesItsStatusAndItsAllocations) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  BgProcess p(
      run_argv({"--profiles", kProfiles, "--mem-rate", "1", "-o", dir.path()}, {HEAP_TARGET}));
  ASSERT_TRUE(p.read_until("ready pid=")) << p.err();
  ASSERT_TRUE(p.send_line("run"));
  ASSERT_TRUE(p.read_until("done round=1")) << p.err();
  ASSERT_TRUE(p.send_line("exit 7"));
  auto st = p.wait_exit(milliseconds(60000));
  ASSERT_TRUE(st) << "profctl run did not end after the program's exit: " << p.err();
  EXPECT_EQ(exit_code_of(*st), 7) << p.describe_status() << "\n" << p.err();
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  expect_one_exact_round(*heap);
}

// --- Signals ----------------------------------------------------------------------------

// 2000 queued SIGRTMIN to a thread that allocates and frees between them (16 x malloc(24)
// + 16 frees every millisecond) at --mem-rate 1: each signal stops the thread for profctl,
// which must hand it back, and some land while the thread is in a probe. The handler counts
// every delivery exactly once (real-time signals queue), and every allocation is recorded.
TEST(Heap, EveryQueuedSignalToAnAllocatingThreadArrivesAndEveryAllocationIsRecorded) {
  PROFCTL_REQUIRE_PROFCTL();
  constexpr long kSignals = 2000;
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(target.pid(), {"--profiles", kProfiles, "--mem-rate", "1",
                                         "--probe-stack-bytes", "1K", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  ASSERT_EQ(target.command("sigalloc start"), "done sigalloc started");

  long sent = 0;
  long sent_while_traced = 0;
  const auto deadline = Clock::now() + std::chrono::seconds(30);
  while (sent < kSignals && Clock::now() < deadline) {
    union sigval value = {};
    if (::sigqueue(target.pid(), SIGRTMIN, value) == 0) {
      ++sent;
      sent_while_traced += tracer_of(target.pid()) > 0 ? 1 : 0;
      if (sent % 50 == 0) {
        std::this_thread::sleep_for(milliseconds(10));  // spread over the allocations
      }
    } else {
      ASSERT_EQ(errno, EAGAIN) << "sigqueue: " << std::strerror(errno);
      std::this_thread::sleep_for(milliseconds(1));
    }
  }
  ASSERT_EQ(sent, kSignals);
  std::string count;
  wait_until(
      [&] {
        count = target.command("sigcount").value_or("");
        return count == "signals=" + std::to_string(kSignals);
      },
      milliseconds(10000), milliseconds(20));
  auto stopped = target.command("sigalloc stop");
  ASSERT_TRUE(stopped) << "the target does not answer: " << describe_tasks(target.pid());
  auto kv = parse_key_values(*stopped);
  EXPECT_EQ(kv["signals"], std::to_string(kSignals))
      << "SIGRTMIN counted vs " << kSignals << " sent (" << sent_while_traced << " while traced)";
  EXPECT_EQ(sent_while_traced, kSignals) << "the capture ended early: " << p.err();
  const long long rounds = std::stoll(kv["rounds"]);
  EXPECT_GT(rounds, 0);
  end_with_sigint(p);
  EXPECT_TRUE(text_matches_files(target.pid()));

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  EXPECT_EQ(heap_counter(*heap, "ring_dropped"), 0);
  using V = std::vector<long long>;
  EXPECT_EQ(heap_values_of(*heap, on_thread({"malloc", "alloc_signalled", "sigalloc_main"})),
            (V{16 * rounds, 16 * 24 * rounds, 0, 0}))
      << rounds << " rounds";
}

// --- SIGTERM and SIGHUP end a capture like SIGINT -----------------------------------------

class HeapEndSignal : public ::testing::TestWithParam<int> {};

// profctl ends, the target is restored byte for byte (no patched text, no probe mapping, no
// tracer) and goes on allocating, and the capture holds the exact round.
TEST_P(HeapEndSignal, RestoresTheTargetExactlyLikeSigint) {
  PROFCTL_REQUIRE_PROFCTL();
  const int sig = GetParam();
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(target.pid(),
                          {"--profiles", kProfiles, "--mem-rate", "1", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  ASSERT_EQ(target.command("run"), "done round=1");
  end_with_signal(p, sig);
  EXPECT_FALSE(probes_in(target.pid())) << maps_of(target.pid());
  EXPECT_TRUE(text_matches_files(target.pid()));
  EXPECT_EQ(tracer_of(target.pid()), 0);
  EXPECT_EQ(target.command("run"), "done round=2");
  EXPECT_EQ(target.command("churn 4 20000", milliseconds(120000)), "done churn");

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  expect_one_exact_round(*heap);
}

INSTANTIATE_TEST_SUITE_P(Heap, HeapEndSignal, ::testing::Values(SIGTERM, SIGHUP),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(sigabbrev_np(info.param));
                         });

}  // namespace
}  // namespace profctl::testing::sampling
