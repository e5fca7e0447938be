// SPDX-License-Identifier: MIT
// CfiWalker: on hand-made tables and stacks (every way a walk stops), and on a live stack
// captured at a known depth, where it must return exactly DwflUnwinder's pcs.
#include "unwind/cfi_walker.h"

#include <dwarf.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "unwind/cfi_modules.h"
#include "unwind/dwfl_unwinder.h"
#include "unwind/table_unwinder.h"
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

// A live stack 20 frames of recursion deep, in a child: it captures its own registers and
// stack (getcontext and a copy, what a Snapshot holds), sends them, and waits to be killed.
// A child, not this process: libelf maps the files each libdwfl session opens, and a later
// session of this process would take those mappings for modules.
int g_out_fd = -1;

__attribute__((noinline)) void capture_here() {
  ucontext_t uc;
  getcontext(&uc);
  const auto* g = uc.uc_mcontext.gregs;
  uint64_t hdr[4] = {uint64_t(g[REG_RIP]), uint64_t(g[REG_RSP]), uint64_t(g[REG_RBP]), 0};
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    uint64_t lo = std::stoull(line, nullptr, 16);
    uint64_t hi = std::stoull(line.substr(line.find('-') + 1), nullptr, 16);
    if (hdr[1] >= lo && hdr[1] < hi) {
      hdr[3] = hi;
    }
  }
  const uint64_t size = std::min<uint64_t>(hdr[3] - hdr[1], 256 * 1024);
  std::vector<char> copy(size);
  std::memcpy(copy.data(), reinterpret_cast<const void*>(hdr[1]), size);
  if (write(g_out_fd, hdr, sizeof hdr) != sizeof hdr ||
      write(g_out_fd, copy.data(), size) != ssize_t(size)) {
    _exit(1);
  }
}

__attribute__((noinline)) int recurse(int n) {
  volatile int pad[8] = {n};
  if (n == 0) {
    capture_here();
    pause();
    return pad[0];
  }
  int r = recurse(n - 1) + pad[0];
  asm volatile("");
  return r;
}

// The child, killed and reaped on every path.
class StackChild {
 public:
  StackChild() {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
      return;
    }
    pid_ = fork();
    if (pid_ == 0) {
      close(fds[0]);
      g_out_fd = fds[1];
      recurse(20);
      _exit(0);
    }
    close(fds[1]);
    in_ = fds[0];
  }
  ~StackChild() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (in_ >= 0) {
      close(in_);
    }
  }
  StackChild(const StackChild&) = delete;
  StackChild& operator=(const StackChild&) = delete;

  bool read_snapshot(Snapshot& s) {
    uint64_t hdr[4];
    if (pid_ <= 0 || !read_all(hdr, sizeof hdr) || hdr[3] <= hdr[1]) {
      return false;
    }
    s.pid = s.tid = pid_;
    s.regs.rip = hdr[0];
    s.regs.rsp = hdr[1];
    s.regs.rbp = hdr[2];
    s.stack_base = hdr[1];
    s.stack_end = hdr[3];
    s.stack_size = std::min<uint64_t>(hdr[3] - hdr[1], 256 * 1024);
    s.stack_bytes = std::make_unique<std::byte[]>(s.stack_size);
    return read_all(s.stack_bytes.get(), s.stack_size);
  }

 private:
  bool read_all(void* p, size_t n) {
    auto* b = static_cast<char*>(p);
    while (n > 0) {
      ssize_t r = read(in_, b, n);
      if (r <= 0) {
        return false;
      }
      b += r;
      n -= size_t(r);
    }
    return true;
  }
  pid_t pid_ = -1;
  int in_ = -1;
};

TEST(CfiWalker, LiveStackMatchesLibdwfl) {
  StackChild child;
  Snapshot s;
  ASSERT_TRUE(child.read_snapshot(s));
  auto dwfl = TargetDwfl::for_process(s.pid, {});
  auto dwfl2 = TargetDwfl::for_process(s.pid, {});
  ASSERT_TRUE(dwfl.ok() && dwfl2.ok());
  CfiModules mods = CfiModules::load((*dwfl)->get(), CfiCache());
  DwflUnwinder du(**dwfl);
  UnwindResult want = du.unwind(s);
  ASSERT_GT(want.frames.size(), 22u);
  EXPECT_FALSE(want.truncated) << want.reason;
  uint64_t pcs[512];
  auto walk = [&] {
    return mods.walker().walk({s.regs.rip, s.regs.rsp, s.regs.rbp},
                              {s.stack_base, s.stack_size, s.stack_bytes.get()}, pcs, 512);
  };
  auto got = walk();
  int loads = 0;
  for (; got.stop == CfiStop::kNoTable && loads < 100; ++loads) {
    mods.resolve(got.module);
    got = walk();
  }
  // This binary and libc (__libc_start_call_main): loaded on demand, the others never.
  EXPECT_GE(loads, 2);
  EXPECT_EQ(mods.stats().compiled + mods.stats().shared, uint64_t(loads));
  EXPECT_LT(uint64_t(loads), mods.stats().modules);
  // The child's stack ends in _start: the whole walk through the tables.
  EXPECT_EQ(got.stop, CfiStop::kOutermost) << to_string(got.stop) << " at frame " << got.frames;
  ASSERT_EQ(got.frames, want.frames.size());
  for (size_t i = 0; i < got.frames; ++i) {
    EXPECT_EQ(pcs[i], want.frames[i].pc) << "frame " << i;
  }

  // TableUnwinder gives the same frames, without libdwfl.
  TableUnwinder tu(**dwfl2, CfiCache());
  UnwindResult viat = tu.unwind(s);
  EXPECT_EQ(tu.counts().tables, 1u);
  EXPECT_EQ(tu.counts().libdwfl, 0u);
  ASSERT_EQ(viat.frames.size(), want.frames.size());
  for (size_t i = 0; i < viat.frames.size(); ++i) {
    EXPECT_EQ(viat.frames[i].pc, want.frames[i].pc) << "frame " << i;
    EXPECT_EQ(viat.frames[i].activation, want.frames[i].activation) << "frame " << i;
  }
  EXPECT_FALSE(viat.truncated);
}

// A stack the tables cannot finish (the copy ends mid-stack) is libdwfl's, reason and all.
TEST(CfiWalker, TableUnwinderFallsBackToLibdwfl) {
  StackChild child;
  Snapshot s;
  ASSERT_TRUE(child.read_snapshot(s));
  s.stack_size = 200;  // a few frames only
  s.stack_cut = true;
  s.stack_cut_reason = "--stack-bytes 200";
  auto d1 = TargetDwfl::for_process(s.pid, {});
  auto d2 = TargetDwfl::for_process(s.pid, {});
  ASSERT_TRUE(d1.ok() && d2.ok());
  DwflUnwinder du(**d1);
  TableUnwinder tu(**d2, CfiCache());
  UnwindResult want = du.unwind(s);
  UnwindResult got = tu.unwind(s);
  EXPECT_EQ(tu.counts().libdwfl, 1u);
  EXPECT_EQ(tu.counts().stops[size_t(CfiStop::kReadFailed)], 1u);
  EXPECT_TRUE(got.truncated);
  EXPECT_EQ(got.reason, want.reason);
  ASSERT_EQ(got.frames.size(), want.frames.size());
  for (size_t i = 0; i < got.frames.size(); ++i) {
    EXPECT_EQ(got.frames[i].pc, want.frames[i].pc);
  }
}

}  // namespace
}  // namespace profctl
