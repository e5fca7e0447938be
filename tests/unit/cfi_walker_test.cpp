// SPDX-License-Identifier: MIT
// CfiWalker: on hand-made tables and stacks (every way a walk stops), and on this test's
// own stack captured at a known depth, where it must return exactly DwflUnwinder's pcs.
#include "unwind/cfi_walker.h"

#include <dwarf.h>
#include <gtest/gtest.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "unwind/cfi_modules.h"
#include "unwind/dwfl_unwinder.h"
#include "unwind/target_dwfl.h"

namespace profctl {
namespace {

// One FDE at [0x1000, 0x1100) of a module loaded at bias 0x400000: CFA rsp+16, RA at
// CFA-8, rbp at CFA-16 (after push rbp); [0x1100, 0x1200): _start, RA undefined;
// [0x1200, 0x1300): CFA on rbp; [0x1300, 0x1400): CFA an expression.
std::vector<uint8_t> eh_frame_bytes() {
  std::vector<uint8_t> b;
  auto u32 = [&](uint32_t v) {
    for (int i = 0; i < 4; ++i) {
      b.push_back(uint8_t(v >> (8 * i)));
    }
  };
  auto finish = [&](size_t at) {
    uint32_t len = uint32_t(b.size() - at - 4);
    std::memcpy(b.data() + at, &len, 4);
  };
  size_t cie = b.size();
  u32(0);
  u32(0);
  for (int x : {1, int('z'), int('R'), 0, 1, 0x78, 16, 1, 0x1b, int(DW_CFA_def_cfa), 7, 8,
                DW_CFA_offset | 16, 1}) {
    b.push_back(uint8_t(x));
  }
  finish(cie);
  auto fde = [&](uint32_t start, std::vector<uint8_t> insns) {
    size_t at = b.size();
    u32(0);
    u32(uint32_t(b.size() - cie));
    u32(uint32_t(int32_t(start - b.size())));  // section at link-time address 0
    u32(0x100);
    b.push_back(0);
    b.insert(b.end(), insns.begin(), insns.end());
    finish(at);
  };
  fde(0x1000, {DW_CFA_def_cfa_offset, 16, DW_CFA_offset | 6, 2});
  fde(0x1100, {DW_CFA_undefined, 16});
  fde(0x1200, {DW_CFA_def_cfa, 6, 16, DW_CFA_offset | 6, 2});
  fde(0x1300, {DW_CFA_def_cfa_expression, 1, DW_OP_lit0});
  u32(0);
  return b;
}

struct Fixture {
  static constexpr uint64_t kBias = 0x400000;
  CfiTable table = [] {
    auto b = eh_frame_bytes();
    return CfiTable::compile_section(b, 0, true, 0);
  }();
  CfiWalker walker{{{kBias + 0x1000, kBias + 0x1400, kBias, &table}}};
  std::vector<uint64_t> stack = std::vector<uint64_t>(64, 0);
  static constexpr uint64_t kStackBase = 0x7000'0000;
  StackCopy copy() const {
    return {kStackBase, stack.size() * 8, reinterpret_cast<const std::byte*>(stack.data())};
  }
  uint64_t addr(size_t slot) const { return kStackBase + slot * 8; }
};

TEST(CfiWalker, WalksToTheOutermostFrame) {
  Fixture f;
  // Frame 0 at 0x1010 (rsp-based, rbp pushed at slot 0, RA at slot 1); frame 1 returns
  // into 0x1210 (rbp-based: CFA = rbp + 16, rbp saved at CFA-16); frame 2 into _start.
  f.stack[0] = f.addr(10);  // saved rbp: frame 1's rbp
  f.stack[1] = Fixture::kBias + 0x1211;
  f.stack[10] = 0x1234;  // frame 1's saved rbp (caller's)
  f.stack[11] = Fixture::kBias + 0x1150;
  uint64_t pcs[16];
  auto r = f.walker.walk({Fixture::kBias + 0x1010, f.addr(0), 0}, f.copy(), pcs, 16);
  EXPECT_EQ(r.stop, CfiStop::kOutermost) << to_string(r.stop);
  ASSERT_EQ(r.frames, 3u);
  EXPECT_EQ(pcs[0], Fixture::kBias + 0x1010);
  EXPECT_EQ(pcs[1], Fixture::kBias + 0x1211);
  EXPECT_EQ(pcs[2], Fixture::kBias + 0x1150);
  EXPECT_EQ(r.at.rsp, f.addr(12));
  EXPECT_EQ(r.at.rbp, 0x1234u);
}

TEST(CfiWalker, StopsWhereTheTableCannotGoOn) {
  Fixture f;
  uint64_t pcs[16];
  const uint64_t b = Fixture::kBias;
  // A return into the expression FDE: not expressible, the registers there reported.
  f.stack[1] = b + 0x1301;
  auto r = f.walker.walk({b + 0x1000, f.addr(0), 0}, f.copy(), pcs, 16);
  EXPECT_EQ(r.stop, CfiStop::kNotExpressible);
  EXPECT_EQ(r.frames, 2u);
  EXPECT_EQ(r.at.rip, b + 0x1301);
  EXPECT_EQ(r.at.rsp, f.addr(2));
  // Into no module; into the module's gap (0x1000 is covered, 0x0fff is not: return to
  // 0x1000 looks up 0x0fff, the call's own instruction).
  f.stack[1] = 0x1234;
  EXPECT_EQ(f.walker.walk({b + 0x1000, f.addr(0), 0}, f.copy(), pcs, 16).stop, CfiStop::kNoModule);
  f.stack[1] = b + 0x1000;
  EXPECT_EQ(f.walker.walk({b + 0x1000, f.addr(0), 0}, f.copy(), pcs, 16).stop, CfiStop::kNoModule);
  // The copy ends before the return address.
  EXPECT_EQ(f.walker.walk({b + 0x1000, f.addr(63), 0}, f.copy(), pcs, 16).stop,
            CfiStop::kReadFailed);
  EXPECT_EQ(f.walker.walk({b + 0x1000, f.addr(0) - 64, 0}, f.copy(), pcs, 16).stop,
            CfiStop::kReadFailed);
  // rbp-based CFA below rsp: a corrupt frame.
  EXPECT_EQ(f.walker.walk({b + 0x1200, f.addr(8), f.addr(0) - 64}, f.copy(), pcs, 16).stop,
            CfiStop::kReadFailed);
  f.stack[3] = b + 0x1001;  // RA at CFA-8, CFA = rbp+16 = slot 4, below rsp (slot 8)
  EXPECT_EQ(f.walker.walk({b + 0x1200, f.addr(8), f.addr(4) - 16}, f.copy(), pcs, 16).stop,
            CfiStop::kBadFrame);
  // A self-loop: the frame returns into itself with the same rsp... the CFA rises, so the
  // copy runs out rather than the walk looping; and the output bound holds.
  for (size_t i = 1; i < f.stack.size(); i += 2) {
    f.stack[i] = b + 0x1001;
  }
  r = f.walker.walk({b + 0x1000, f.addr(0), 0}, f.copy(), pcs, 4);
  EXPECT_EQ(r.stop, CfiStop::kMaxFrames);
  EXPECT_EQ(r.frames, 4u);
  // Return address 0: the end, as libdwfl has it.
  f.stack[1] = 0;
  r = f.walker.walk({b + 0x1000, f.addr(0), 0}, f.copy(), pcs, 16);
  EXPECT_EQ(r.stop, CfiStop::kOutermost);
  EXPECT_EQ(r.frames, 1u);
}

// This process's own stack, 20 frames of recursion deep, both ways.
std::vector<Snapshot> g_snaps;

__attribute__((noinline)) void capture_here() {
  ucontext_t uc;
  getcontext(&uc);
  Snapshot s;
  s.pid = getpid();
  s.tid = gettid();
  const auto* g = uc.uc_mcontext.gregs;
  s.regs.rip = uint64_t(g[REG_RIP]);
  s.regs.rsp = uint64_t(g[REG_RSP]);
  s.regs.rbp = uint64_t(g[REG_RBP]);
  s.regs.rbx = uint64_t(g[REG_RBX]);
  s.regs.r12 = uint64_t(g[REG_R12]);
  s.regs.r13 = uint64_t(g[REG_R13]);
  s.regs.r14 = uint64_t(g[REG_R14]);
  s.regs.r15 = uint64_t(g[REG_R15]);
  s.stack_base = s.regs.rsp;
  s.stack_size = 256 * 1024;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    uint64_t lo = std::stoull(line, nullptr, 16);
    uint64_t hi = std::stoull(line.substr(line.find('-') + 1), nullptr, 16);
    if (s.stack_base >= lo && s.stack_base < hi) {
      s.stack_size = std::min<uint64_t>(s.stack_size, hi - s.stack_base);
      s.stack_end = hi;
    }
  }
  s.stack_bytes = std::make_unique<std::byte[]>(s.stack_size);
  std::memcpy(s.stack_bytes.get(), reinterpret_cast<const void*>(s.stack_base), s.stack_size);
  g_snaps.push_back(std::move(s));
}

__attribute__((noinline)) int recurse(int n) {
  volatile int pad[8] = {n};
  if (n == 0) {
    capture_here();
    return pad[0];
  }
  int r = recurse(n - 1) + pad[0];
  asm volatile("");
  return r;
}

TEST(CfiWalker, OwnStackMatchesLibdwfl) {
  g_snaps.clear();
  recurse(20);
  ASSERT_EQ(g_snaps.size(), 1u);
  const Snapshot& s = g_snaps[0];
  auto dwfl = TargetDwfl::for_process(getpid(), {});
  ASSERT_TRUE(dwfl.ok()) << dwfl.error().message();
  CfiModules mods = CfiModules::load((*dwfl)->get(), CfiCache());
  EXPECT_GT(mods.stats().compiled, 2u);
  DwflUnwinder du(**dwfl);
  UnwindResult want = du.unwind(s);
  ASSERT_GT(want.frames.size(), 22u);
  uint64_t pcs[512];
  auto got = mods.walker().walk({s.regs.rip, s.regs.rsp, s.regs.rbp},
                                {s.stack_base, s.stack_size, s.stack_bytes.get()}, pcs, 512);
  // gtest's main thread ends in _start: the whole walk through the tables.
  EXPECT_EQ(got.stop, CfiStop::kOutermost) << to_string(got.stop) << " at frame " << got.frames;
  ASSERT_EQ(got.frames, want.frames.size());
  for (size_t i = 0; i < got.frames; ++i) {
    EXPECT_EQ(pcs[i], want.frames[i].pc) << "frame " << i;
  }
}

}  // namespace
}  // namespace profctl
