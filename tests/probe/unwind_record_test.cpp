// SPDX-License-Identifier: MIT
// A probe record is enough for the existing unwinder: the registers at the probed function's
// entry plus the stack copy unwind through the test's own frames, exactly.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "probe/abi/probe_abi.h"
#include "probe/ring_reader.h"
#include "tests/probe/libc_probes.h"
#include "unwind/dwfl_unwinder.h"
#include "unwind/target_dwfl.h"

namespace profctl::probe {
namespace {

void* (*volatile g_malloc)(size_t) = malloc;

// Each level notes its own return address: the unwound pcs must be exactly these.
__attribute__((noinline)) void* level1(size_t n, uint64_t* return_into_level2) {
  *return_into_level2 = reinterpret_cast<uint64_t>(__builtin_return_address(0));
  void* p = g_malloc(n);
  __asm__ volatile("" : : "r"(p) : "memory");  // no tail call
  return p;
}

__attribute__((noinline)) void* level2(size_t n, uint64_t* r1, uint64_t* return_into_test) {
  *return_into_test = reinterpret_cast<uint64_t>(__builtin_return_address(0));
  void* p = level1(n, r1);
  __asm__ volatile("" : : "r"(p) : "memory");
  return p;
}

TEST(ProbeUnwind, RecordUnwindsThroughTheCallersFrames) {
  SharedAreaOptions o;
  o.mem_rate = 1;
  o.owner_pid = getpid();
  auto probes = testing::LibcProbes::install({{"malloc", PROBE_KIND_MALLOC}}, o);
  ASSERT_TRUE(probes) << probes.error().message();
  uint64_t r1 = 0, r2 = 0;
  (*probes)->area().set_enabled(true);
  void* p = level2(424242, &r1, &r2);
  (*probes)->area().set_enabled(false);
  (*probes)->remove();
  free(p);

  RingReader reader((*probes)->area());
  auto records = reader.drain_records();
  ASSERT_EQ(records.size(), 1u);
  ASSERT_EQ(records[0].value, 424242u);
  uint64_t return_into_level1 = 0;
  std::memcpy(&return_into_level1, records[0].stack.data(), 8);
  Snapshot snap = to_snapshot(std::move(records[0]));

  auto dwfl = TargetDwfl::for_process(getpid(), DwflOptions{});
  ASSERT_TRUE(dwfl) << dwfl.error().message();
  DwflUnwinder unwinder(**dwfl);
  UnwindResult u = unwinder.unwind(snap);
  ASSERT_GE(u.frames.size(), 4u) << u.reason;
  EXPECT_EQ(u.frames[0].pc, (*probes)->address("malloc"));
  EXPECT_TRUE(u.frames[0].activation);
  EXPECT_EQ(u.frames[1].pc, return_into_level1);
  EXPECT_EQ(u.frames[2].pc, r1);
  EXPECT_EQ(u.frames[3].pc, r2);
}

}  // namespace
}  // namespace profctl::probe
