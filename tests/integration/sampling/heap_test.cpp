// The heap profile on real processes: an exactly known workload recorded exactly at
// --mem-rate 1; the target restored byte for byte after SIGINT and SIGKILL of profctl;
// children forked while the probes are in; 8 threads allocating flat out; exec; a function
// that cannot take a jump (breakpoint fallback). Targets: heap_target.c, heap_int3.c.
#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <sstream>
#include <thread>

#include "sampling_support.h"
#include "support/procfs.h"

namespace profctl::testing::sampling {
namespace {

using Clock = std::chrono::steady_clock;

std::string maps_of(pid_t pid) {
  return read_text("/proc/" + std::to_string(pid) + "/maps").value_or("");
}

bool probes_in(pid_t pid) { return maps_of(pid).find("profctl-probe") != std::string::npos; }

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

// The heap sample whose stack holds `function`: values in Go's order.
std::vector<long long> heap_values_of(const Json& heap, const std::string& function) {
  std::vector<long long> sum(4, 0);
  for (const Json& s : heap.at("samples")) {
    if (has_function(s, function)) {
      for (size_t i = 0; i < 4; ++i) {
        sum[i] += s.at("values").at(i).get<long long>();
      }
    }
  }
  return sum;
}

// profctl runs with -v: it says when the probes are in (the install itself runs remote
// syscalls in a stopped thread; a SIGKILL of profctl in those few milliseconds is the one
// moment it cannot make safe, see the man page).
void start_and_wait_for_probes(Child& target, BgProcess& p) {
  ASSERT_TRUE(wait_traced(target.pid())) << p.err();
  ASSERT_TRUE(wait_until(
      [&] {
        return probes_in(target.pid()) &&
               p.err().find("heap probes installed") != std::string::npos;
      },
      milliseconds(30000)))
      << "the probes never appeared: " << p.err();
}

void end_with_sigint(BgProcess& p) {
  ASSERT_TRUE(wait_until([&] { return catches(p.pid(), SIGINT); }, milliseconds(30000)));
  ASSERT_TRUE(p.signal(SIGINT));
  auto st = p.wait_exit(milliseconds(60000));
  ASSERT_TRUE(st) << "profctl did not end after SIGINT";
  EXPECT_EQ(exit_code_of(*st), 0) << p.err();
}

TEST(Heap, AnExactWorkloadIsRecordedExactlyAtRate1AndTheTargetIsRestored) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(
      attach_argv(target.pid(), {"--profiles", "heap", "--mem-rate", "1", "-v", "-o", dir.path()}));
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
  // alloc_objects, alloc_space, inuse_objects, inuse_space per allocating function.
  using V = std::vector<long long>;
  EXPECT_EQ(heap_values_of(*heap, "alloc_small"), (V{100, 10000, 100, 10000}));
  EXPECT_EQ(heap_values_of(*heap, "alloc_freed"), (V{50, 204800, 0, 0}));
  EXPECT_EQ(heap_values_of(*heap, "alloc_calloc"), (V{20, 5120, 20, 5120}));
  // 10 malloc(64), each moved by realloc to 8192 bytes: the realloc's block is live.
  EXPECT_EQ(heap_values_of(*heap, "alloc_realloc"), (V{20, 10 * 64 + 10 * 8192, 10, 81920}));
  EXPECT_EQ(heap_values_of(*heap, "alloc_aligned"), (V{5, 5000, 5, 5000}));
  EXPECT_EQ(heap_values_of(*heap, "alloc_thread"), (V{30, 6000, 30, 6000}));
  EXPECT_TRUE(outputs_valid(dir.path(), {{"heap", {"alloc_small", "alloc_thread"}}}));
}

TEST(Heap, ChildrenForkedWhileProbedRunCorrectly) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(target.pid(),
                          {"--profiles", "heap", "--mem-rate", "64", "-v", "-o", dir.path()}));
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
  // Small stack copies: the 64 MiB ring holds every record, so the count is exact.
  BgProcess p(attach_argv(target.pid(), {"--profiles", "heap", "--mem-rate", "1",
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
  const long long recorded = heap_values_of(*heap, "churn_loop")[0];
  const long long dropped = heap->value("counters", Json::object()).value("ring_dropped", 0LL);
  EXPECT_EQ(dropped, 0);
  EXPECT_EQ(recorded, 8 * 5000) << "recorded " << recorded << " dropped " << dropped;
  EXPECT_EQ(heap_values_of(*heap, "churn_loop")[2], 0) << "every churn allocation was freed";
}

TEST(Heap, SigkillOfProfctlLeavesTheTargetAllocatingCorrectly) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({HEAP_TARGET});
  ASSERT_TRUE(target.wait_ready());
  for (int round = 1; round <= 20; ++round) {
    BgProcess p(attach_argv(target.pid(), {"--profiles", "heap", "--mem-rate", "4096", "-v"}));
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
  BgProcess p(
      attach_argv(target.pid(), {"--profiles", "heap", "--mem-rate", "1", "-v", "-o", dir.path()}));
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
  EXPECT_EQ(heap_values_of(*heap, "alloc_small")[0], 100);
  EXPECT_NE(capture->dump().find("the heap profile ends there"), std::string::npos)
      << "no note of the exec";
}

TEST(Heap, AFunctionThatCannotTakeAJumpIsProbedWithABreakpointAndRecordedExactly) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  auto r = run({PROFCTL_BIN, "run", "--profiles", "heap", "--mem-rate", "1", "-o", dir.path(), "--",
                HEAP_INT3, "100"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* heap = profile_of(*capture, "heap");
  ASSERT_NE(heap, nullptr);
  using V = std::vector<long long>;
  EXPECT_EQ(heap_values_of(*heap, "malloc_from_here"), (V{100, 4800, 100, 4800}));
  EXPECT_NE(capture->dump().find("breakpoint"), std::string::npos)
      << "the fallback is not reported";
}

}  // namespace
}  // namespace profctl::testing::sampling
