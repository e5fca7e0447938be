// SPDX-License-Identifier: MIT
// DwflUnwinder on live symfix processes: snapshot taken while stopped (seize, interrupt,
// GETREGS, process_vm_readv), target resumed and reaped, THEN unwound and symbolized.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "symbolize/symbolizer.h"
#include "tests/unit/symfix_util.h"
#include "unwind/dwfl_unwinder.h"
#include "unwind/target_dwfl.h"

namespace profctl {
namespace {

// Kills and reaps the child on every exit path, failures included.
class ChildGuard {
 public:
  ChildGuard() = default;
  ChildGuard(const ChildGuard&) = delete;
  ChildGuard& operator=(const ChildGuard&) = delete;
  ~ChildGuard() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, __WALL);
    }
    for (int fd : {to_child_, from_child_}) {
      if (fd >= 0) {
        close(fd);
      }
    }
  }
  pid_t pid() const { return pid_; }

  // Runs `path stop` with stdin and stdout on pipes; waits for its "ready" line.
  bool spawn(const char* path) {
    int in[2];
    int out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) {
      return false;
    }
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      execl(path, path, "stop", static_cast<char*>(nullptr));
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    to_child_ = in[1];
    from_child_ = out[0];
    if (pid_ < 0) {
      return false;
    }
    std::string got;
    char c;
    while (got.size() < 6 && read(from_child_, &c, 1) == 1) {
      got += c;
    }
    return got == "ready\n" && wait_in_read();
  }

  // "ready" is written just before the read: wait until the child is blocked in read(2)
  // (syscall 0 in /proc/PID/syscall), so that its stack is the one the fixture documents.
  bool wait_in_read() const {
    for (int i = 0; i < 5000; ++i) {
      std::ifstream f("/proc/" + std::to_string(pid_) + "/syscall");
      std::string nr;
      if (f >> nr && nr == "0") {
        return true;
      }
      usleep(1000);
    }
    return false;
  }

  // Lets the blocked chain return; the child then exits 0 and is reaped here.
  bool release_and_reap() {
    char c = 'x';
    if (write(to_child_, &c, 1) != 1) {
      return false;
    }
    int st = 0;
    if (waitpid(pid_, &st, __WALL) != pid_) {
      return false;
    }
    pid_ = -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
  }

 private:
  pid_t pid_ = -1;
  int to_child_ = -1;
  int from_child_ = -1;
};

// The end of the mapping holding `addr` in /proc/PID/maps (0 when none).
uint64_t mapping_end(pid_t pid, uint64_t addr) {
  std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
  std::string line;
  while (std::getline(maps, line)) {
    uint64_t start = 0;
    uint64_t end = 0;
    if (std::sscanf(line.c_str(), "%" SCNx64 "-%" SCNx64, &start, &end) == 2 && addr >= start &&
        addr < end) {
      return end;
    }
  }
  return 0;
}

enum class SeizeResult { kOk, kNoPermission, kFailed };

// What attach/ does, in miniature: seize, interrupt, wait for the stop, registers, one
// process_vm_readv of up to `max_bytes` from rsp, detach (the target runs again).
SeizeResult take_snapshot(pid_t pid, size_t max_bytes, Snapshot& snap, std::string& why) {
  if (ptrace(PTRACE_SEIZE, pid, nullptr, nullptr) != 0) {
    why = std::string("PTRACE_SEIZE: ") + std::strerror(errno);
    return errno == EPERM ? SeizeResult::kNoPermission : SeizeResult::kFailed;
  }
  if (ptrace(PTRACE_INTERRUPT, pid, nullptr, nullptr) != 0) {
    why = std::string("PTRACE_INTERRUPT: ") + std::strerror(errno);
    return SeizeResult::kFailed;
  }
  int st = 0;
  if (waitpid(pid, &st, __WALL) != pid || !WIFSTOPPED(st)) {
    why = "waitpid: no stop";
    return SeizeResult::kFailed;
  }
  snap.pid = pid;
  snap.tid = pid;
  if (ptrace(PTRACE_GETREGS, pid, nullptr, &snap.regs) != 0) {
    why = std::string("PTRACE_GETREGS: ") + std::strerror(errno);
    return SeizeResult::kFailed;
  }
  snap.stack_base = snap.regs.rsp;
  snap.stack_end = mapping_end(pid, snap.regs.rsp);
  size_t want = std::min<uint64_t>(max_bytes, snap.stack_end - snap.stack_base);
  snap.stack_bytes = std::make_unique<std::byte[]>(want);
  iovec local{snap.stack_bytes.get(), want};
  iovec remote{reinterpret_cast<void*>(snap.stack_base), want};
  ssize_t got = process_vm_readv(pid, &local, 1, &remote, 1, 0);
  snap.stack_size = got > 0 ? static_cast<size_t>(got) : 0;
  snap.stack_cut = snap.stack_base + snap.stack_size < snap.stack_end;
  if (snap.stack_cut) {
    snap.stack_cut_reason = "--stack-bytes " + std::to_string(max_bytes);
  }
  if (ptrace(PTRACE_DETACH, pid, nullptr, nullptr) != 0) {
    why = std::string("PTRACE_DETACH: ") + std::strerror(errno);
    return SeizeResult::kFailed;
  }
  return SeizeResult::kOk;
}

std::string describe(const UnwindResult& r, Symbolizer& s) {
  std::string out;
  for (const UnwoundFrame& f : r.frames) {
    for (const Frame& sf : s.symbolize(f.pc, f.activation)) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "0x%" PRIx64 " ", sf.pc);
      out += buf + sf.function.value_or("?") + " [" + sf.module + "]" +
             (sf.inlined ? " (inlined)" : "") + "\n";
    }
  }
  if (r.truncated) {
    out += "truncated: " + r.reason + "\n";
  }
  return out;
}

// The physical function names of an unwound stack, innermost first.
std::vector<std::string> functions(const UnwindResult& r, Symbolizer& s) {
  std::vector<std::string> out;
  for (const UnwoundFrame& f : r.frames) {
    out.push_back(s.symbolize(f.pc, f.activation).back().function.value_or("?"));
  }
  return out;
}

void expect_chain(const char* fixture, bool expect_complete) {
  ChildGuard child;
  ASSERT_TRUE(child.spawn(fixture)) << fixture;
  // Modules are reported (and their ELF loaded) while the target is alive.
  auto target = TargetDwfl::for_process(child.pid(), {});
  ASSERT_TRUE(target.ok()) << target.error().message();
  auto small = TargetDwfl::for_process(child.pid(), {});
  ASSERT_TRUE(small.ok()) << small.error().message();

  Snapshot snap;
  std::string why;
  switch (take_snapshot(child.pid(), 64 * 1024, snap, why)) {
    case SeizeResult::kNoPermission:
      GTEST_SKIP() << "cannot ptrace here: " << why;
    case SeizeResult::kFailed:
      FAIL() << why;
    case SeizeResult::kOk:
      break;
  }
  // The target runs on and exits: everything below works from the snapshot alone.
  ASSERT_TRUE(child.release_and_reap());

  DwflUnwinder unwinder(**target);
  auto t0 = std::chrono::steady_clock::now();
  UnwindResult r = unwinder.unwind(snap);
  auto t1 = std::chrono::steady_clock::now();
  Symbolizer sym(**target, {});
  std::vector<std::string> names = functions(r, sym);
  auto t2 = std::chrono::steady_clock::now();
  std::printf("%s: %zu frames, unwind %.1f us, first symbolize %.1f us\n", fixture, r.frames.size(),
              std::chrono::duration<double, std::micro>(t1 - t0).count(),
              std::chrono::duration<double, std::micro>(t2 - t1).count());

  ASSERT_FALSE(r.frames.empty());
  EXPECT_TRUE(r.frames[0].activation);
  EXPECT_EQ(r.frames[0].pc, snap.regs.rip);
  auto c = std::find(names.begin(), names.end(), "chain_c");
  ASSERT_NE(c, names.end()) << describe(r, sym);
  ASSERT_GE(names.end() - c, 4) << describe(r, sym);
  EXPECT_EQ(c[1], "chain_b") << describe(r, sym);
  EXPECT_EQ(c[2], "chain_a") << describe(r, sym);
  EXPECT_EQ(c[3], "main") << describe(r, sym);
  // Every frame above chain_c is in libc's read.
  for (auto it = names.begin(); it != c; ++it) {
    EXPECT_NE(it->find("read"), std::string::npos) << describe(r, sym);
  }
  if (expect_complete) {
    EXPECT_FALSE(r.truncated) << describe(r, sym);
    EXPECT_EQ(names.back(), "_start") << describe(r, sym);
  }
  // The symbolized chain_c frame is in the fixture, with an ELF-relative offset.
  const Frame& fc = sym.symbolize(r.frames[c - names.begin()].pc, false).back();
  EXPECT_EQ(fc.module, fixture);
  EXPECT_LT(fc.offset, fc.pc);

  // max_frames bounds the walk (a separate Dwfl: state is attached once per Dwfl).
  DwflUnwinder two(**small, 2);
  UnwindResult r2 = two.unwind(snap);
  EXPECT_EQ(r2.frames.size(), 2u);
  EXPECT_TRUE(r2.truncated);
  EXPECT_NE(r2.reason.find("max frames"), std::string::npos) << r2.reason;
  ASSERT_GE(r.frames.size(), 2u);
  EXPECT_EQ(r2.frames[0].pc, r.frames[0].pc);
  EXPECT_EQ(r2.frames[1].pc, r.frames[1].pc);

  // Unwinding the same snapshot again gives the same stack (and a warm-cache timing).
  constexpr int kRuns = 200;
  auto w0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kRuns; ++i) {
    UnwindResult again = unwinder.unwind(snap);
    ASSERT_EQ(again.frames.size(), r.frames.size());
    for (size_t j = 0; j < r.frames.size(); ++j) {
      ASSERT_EQ(again.frames[j].pc, r.frames[j].pc);
    }
  }
  auto w1 = std::chrono::steady_clock::now();
  std::printf("  warm unwind: %.2f us per stack, %.2f us per frame\n",
              std::chrono::duration<double, std::micro>(w1 - w0).count() / kRuns,
              std::chrono::duration<double, std::micro>(w1 - w0).count() / kRuns /
                  static_cast<double>(r.frames.size()));
}

TEST(Unwind, CfiChainNoFramePointer) { expect_chain(SYMFIX_PATH, true); }

TEST(Unwind, CfiChainWithFramePointer) { expect_chain(SYMFIX_FP_PATH, true); }

TEST(Unwind, FramePointerFallbackWithoutCfi) { expect_chain(SYMFIX_NOCFI_PATH, false); }

TEST(Unwind, CutStackCopyIsTruncatedWithTheReason) {
  ChildGuard child;
  ASSERT_TRUE(child.spawn(SYMFIX_PATH));
  auto target = TargetDwfl::for_process(child.pid(), {});
  ASSERT_TRUE(target.ok()) << target.error().message();
  Snapshot snap;
  std::string why;
  switch (take_snapshot(child.pid(), 16, snap, why)) {
    case SeizeResult::kNoPermission:
      GTEST_SKIP() << "cannot ptrace here: " << why;
    case SeizeResult::kFailed:
      FAIL() << why;
    case SeizeResult::kOk:
      break;
  }
  ASSERT_TRUE(child.release_and_reap());
  ASSERT_TRUE(snap.stack_cut);
  DwflUnwinder unwinder(**target);
  UnwindResult r = unwinder.unwind(snap);
  Symbolizer sym(**target, {});
  EXPECT_GE(r.frames.size(), 1u);
  EXPECT_TRUE(r.truncated) << describe(r, sym);
  EXPECT_NE(r.reason.find("--stack-bytes 16"), std::string::npos) << r.reason;
  auto names = functions(r, sym);
  EXPECT_EQ(std::find(names.begin(), names.end(), "main"), names.end()) << describe(r, sym);
}

TEST(Unwind, LiveModules) {
  ChildGuard child;
  ASSERT_TRUE(child.spawn(SYMFIX_PATH));
  auto target = TargetDwfl::for_process(child.pid(), {});
  ASSERT_TRUE(target.ok()) << target.error().message();
  EXPECT_EQ((*target)->pid(), child.pid());
  auto mods = (*target)->modules();
  bool exe = false;
  bool vdso = false;
  bool libc = false;
  for (const ModuleInfo& m : mods) {
    EXPECT_LT(m.start, m.end) << m.path;
    if (m.path == SYMFIX_PATH) {
      exe = true;
      EXPECT_EQ(m.file_offset, 0u);
      EXPECT_FALSE(m.build_id.empty());
    }
    vdso = vdso || m.path == "[vdso]";
    libc = libc || m.path.find("libc.so") != std::string::npos;
  }
  EXPECT_TRUE(exe);
  EXPECT_TRUE(vdso);
  EXPECT_TRUE(libc);
  EXPECT_TRUE((*target)->refresh().ok());  // maps unchanged: nothing to do
  ASSERT_TRUE(child.release_and_reap());
  EXPECT_FALSE((*target)->refresh().ok());  // the process is gone
  EXPECT_EQ((*target)->modules().size(), mods.size());
}

// The function whose address the modules must keep: one of this binary's.
[[gnu::noinline]] int functions_for_test_address() { return 7; }

// Kills and reaps a forked child on every exit path.
class ChildReaper {
 public:
  explicit ChildReaper(pid_t pid) : pid_(pid) {}
  ChildReaper(const ChildReaper&) = delete;
  ChildReaper& operator=(const ChildReaper&) = delete;
  ~ChildReaper() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }

 private:
  pid_t pid_;
};

bool is_zombie(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');
  return paren == std::string::npos || paren + 2 >= text.size() || text[paren + 2] == 'Z';
}
// A process exiting while its modules are re-read: the modules it had stay. refresh()
// checked one read of the maps and reported another; a process that exited between the
// two reports no module at all, and every stack of the capture lost its names (1 CI run
// of Heap.TheTargetExitingWhileProbedEndsWithCode3AndKeepsItsAllocations). The child
// maps and unmaps memory (so every refresh re-reports) and exits at a varying moment.
TEST(Unwind, AProcessExitingDuringARefreshKeepsItsModules) {
  const auto here = reinterpret_cast<uint64_t>(&functions_for_test_address);
  for (int round = 0; round < 150; ++round) {
    int go[2];
    ASSERT_EQ(pipe2(go, O_CLOEXEC), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      char c;
      if (read(go[0], &c, 1) != 1) {
        _exit(1);
      }
      // Exits after 0 to 3 ms of changing its maps.
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20 * round);
      for (size_t pages = 1; std::chrono::steady_clock::now() < until; pages = pages % 7 + 1) {
        void* p = mmap(nullptr, pages * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) {
          munmap(p, pages * 4096);
        }
      }
      _exit(0);
    }
    close(go[0]);
    ChildReaper reaper(pid);
    auto target = TargetDwfl::for_process(pid, {});
    ASSERT_TRUE(target.ok()) << target.error().message();
    ASSERT_TRUE((*target)->has_module_at(here));
    ASSERT_EQ(write(go[1], "g", 1), 1);
    close(go[1]);
    for (;;) {
      const bool gone = !(*target)->refresh().ok() || is_zombie(pid);
      ASSERT_TRUE((*target)->has_module_at(here)) << "round " << round;
      if (gone) {
        break;
      }
    }
  }
}

// Garbage in a snapshot (it comes from the target) never crashes the unwinder: registers
// point nowhere, and the copy sits at the very top of the address space so that every
// bounds sum would overflow.
TEST(Unwind, GarbageSnapshotNeverCrashes) {
  auto target = TargetDwfl::for_files({SYMFIX_PATH});
  ASSERT_TRUE(target.ok());
  auto sym = testing::find_symbol((*target)->get(), "symfix", "chain_b");
  ASSERT_TRUE(sym);
  DwflUnwinder unwinder(**target);
  for (uint64_t base : {~uint64_t{0} - 7, ~uint64_t{0} - 15, uint64_t{0}, uint64_t{8}}) {
    Snapshot snap;
    snap.pid = 1;
    snap.tid = 1;
    snap.regs.rip = sym->addr + 1;
    snap.regs.rsp = base;
    snap.regs.rbp = base + 8;
    snap.stack_base = base;
    snap.stack_size = 16;
    snap.stack_bytes = std::make_unique<std::byte[]>(16);
    std::memset(snap.stack_bytes.get(), 0xff, 16);
    snap.stack_end = base;
    UnwindResult r = unwinder.unwind(snap);
    ASSERT_FALSE(r.frames.empty());
    EXPECT_EQ(r.frames[0].pc, snap.regs.rip);
    EXPECT_LE(r.frames.size(), 65536u);
  }
  Snapshot empty;
  empty.pid = 1;
  empty.tid = 1;
  empty.regs.rip = sym->addr;
  empty.stack_size = 4096;  // no bytes behind it
  UnwindResult r = unwinder.unwind(empty);
  EXPECT_EQ(r.frames.size(), 1u);
  EXPECT_TRUE(r.truncated);
}

}  // namespace
}  // namespace profctl
