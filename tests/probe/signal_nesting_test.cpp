// SPDX-License-Identifier: MIT
// A signal handler that allocates while its thread is inside a recorded call, and probed
// calls nested in a probed call: only the outermost call is recorded, nothing is
// corrupted. The outer function is this binary's own, probed with the int3 fallback (it is
// out of jmp reach of the code area near libc).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "attach/proc.h"
#include "base/fd.h"
#include "probe/abi/probe_abi.h"
#include "probe/elf_symbols.h"
#include "probe/ring_reader.h"
#include "tests/probe/libc_probes.h"

namespace {

void* (*volatile g_malloc)(size_t) = malloc;
void (*volatile g_free)(void*) = free;
volatile int g_handler_allocations = 0;

void on_sigusr1(int) {
  // Inside the outer call-through: libc's malloc and free are probed too, and must take
  // the original path (depth > 0).
  void* p = g_malloc(4444);
  g_free(p);
  g_handler_allocations = g_handler_allocations + 1;
}

}  // namespace

// Probed as an allocation function: raises a signal whose handler allocates, and
// allocates itself through libc's (probed) malloc.
extern "C" __attribute__((noinline, used)) void* probe_test_outer_alloc(size_t n) {
  raise(SIGUSR1);
  void* p = g_malloc(n);
  __asm__ volatile("" : : "r"(p) : "memory");
  return p;
}

namespace profctl::probe {
namespace {

TEST(ProbeSignals, HandlerAndNestedCallsInsideARecordedCallAreNotRecorded) {
  char exe[4096] = {};
  ASSERT_GT(readlink("/proc/self/exe", exe, sizeof exe - 1), 0);
  std::vector<std::string> names = {"probe_test_outer_alloc"};
  auto elf = read_elf_functions(exe, names);
  ASSERT_TRUE(elf) << elf.error().message();
  ASSERT_TRUE(elf->functions.contains("probe_test_outer_alloc"));
  auto maps = parse_maps(read_file("/proc/self/maps").value());
  auto bias = load_bias(*elf, maps, exe);
  ASSERT_TRUE(bias) << bias.error().message();
  const ElfFunction& f = elf->functions.at("probe_test_outer_alloc");
  uint64_t outer = *bias + f.value;
  ASSERT_EQ(outer, reinterpret_cast<uint64_t>(&probe_test_outer_alloc));

  struct sigaction sa {};
  sa.sa_handler = on_sigusr1;
  sigaction(SIGUSR1, &sa, nullptr);

  SharedAreaOptions o;
  o.mem_rate = 1;
  o.stack_bytes = 1024;
  o.owner_pid = getpid();
  auto probes = testing::LibcProbes::install({{"malloc", PROBE_KIND_MALLOC},
                                              {"free", PROBE_KIND_FREE},
                                              {"outer", PROBE_KIND_MALLOC, outer, f.size}},
                                             o);
  ASSERT_TRUE(probes) << probes.error().message();
  const auto& sites = (*probes)->image().sites;
  EXPECT_EQ(sites[0].method, PatchMethod::Jump);
  EXPECT_EQ(sites[2].method, PatchMethod::Int3) << sites[2].reason;

  (*probes)->area().set_enabled(true);
  raise(SIGUSR1);  // control: outside any call-through the handler's calls are recorded
  void* p = probe_test_outer_alloc(31313);
  (*probes)->area().set_enabled(false);
  (*probes)->remove();
  signal(SIGUSR1, SIG_DFL);
  free(p);
  EXPECT_EQ(g_handler_allocations, 2);

  RingReader reader((*probes)->area());
  auto records = reader.drain_records();
  // The control's malloc + free, then only the outer call: not the handler's malloc/free
  // inside it, not its inner malloc.
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].kind, PROBE_KIND_MALLOC);
  EXPECT_EQ(records[0].value, 4444u);
  EXPECT_EQ(records[1].kind, PROBE_KIND_FREE);
  EXPECT_EQ(records[2].kind, PROBE_KIND_MALLOC);
  EXPECT_EQ(records[2].site, sites[2].site_index);
  EXPECT_EQ(records[2].regs.rip, outer);
  EXPECT_EQ(records[2].value, 31313u);
  EXPECT_EQ(records[2].ptr, reinterpret_cast<uint64_t>(p));
  ProbeCounters k = (*probes)->area().counters();
  EXPECT_EQ(k.inflight, 0u);
  EXPECT_EQ(k.records_written, 3u);
}

}  // namespace
}  // namespace profctl::probe
