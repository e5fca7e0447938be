// SPDX-License-Identifier: MIT
// The seccomp check's classic-BPF interpreter on hand-built filters (what the kernel would
// return for a call, and refusal of programs the kernel would not have accepted), the
// precedence across stacked filters, and the /proc status parsers.
#include "attach/seccomp_check.h"

#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <string>
#include <vector>

#include "base/fd.h"

namespace profctl {
namespace {

sock_filter stmt(uint16_t code, uint32_t k) { return sock_filter{code, 0, 0, k}; }
sock_filter jump(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) {
  return sock_filter{code, jt, jf, k};
}
sock_filter load(size_t offset) {
  return stmt(BPF_LD | BPF_W | BPF_ABS, static_cast<uint32_t>(offset));
}
sock_filter ret(uint32_t v) { return stmt(BPF_RET | BPF_K, v); }

constexpr size_t kNr = offsetof(seccomp_data, nr);
constexpr size_t kArch = offsetof(seccomp_data, arch);
size_t arg_low(size_t i) { return offsetof(seccomp_data, args) + 8 * i; }
size_t arg_high(size_t i) { return arg_low(i) + 4; }

RemoteSyscall call(long nr, std::array<uint64_t, 6> args = {}, uint64_t ip = 0x7f0000001002) {
  return RemoteSyscall{nr, args, ip};
}

// The calls profctl makes to install its probes.
const RemoteSyscall kMmapRw = call(SYS_mmap, {0x7f0000000000, 8192, PROT_READ | PROT_WRITE,
                                              MAP_PRIVATE | MAP_ANONYMOUS, ~0ULL, 0});
const RemoteSyscall kMprotectRx = call(SYS_mprotect, {0x7f0000000000, 8192, PROT_READ | PROT_EXEC});
const RemoteSyscall kMemfd = call(SYS_memfd_create, {0x7f0000000000, 1});

// Allows read, write, mmap, munmap, close; everything else is SECCOMP_RET_KILL_PROCESS.
SeccompProgram allow_list() {
  return {
      load(kArch),
      jump(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      ret(SECCOMP_RET_KILL_PROCESS),
      load(kNr),
      jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_read, 5, 0),
      jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_write, 4, 0),
      jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 3, 0),
      jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_munmap, 2, 0),
      jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_close, 1, 0),
      ret(SECCOMP_RET_KILL_PROCESS),
      ret(SECCOMP_RET_ALLOW),
  };
}

// SECCOMP_RET_KILL_PROCESS for one syscall, `other` for the rest.
SeccompProgram deny(long nr, uint32_t action, uint32_t other = SECCOMP_RET_ALLOW) {
  return {
      load(kNr),
      jump(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 1),
      ret(action),
      ret(other),
  };
}

// mmap or mprotect with PROT_EXEC in args[2] (its low word): SECCOMP_RET_KILL_PROCESS.
SeccompProgram deny_exec() {
  return {
      load(kNr),
      jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 1, 0),
      jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_mprotect, 0, 3),
      load(arg_low(2)),
      jump(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 0, 1),
      ret(SECCOMP_RET_KILL_PROCESS),
      ret(SECCOMP_RET_ALLOW),
  };
}

uint32_t run(const SeccompProgram& p, const RemoteSyscall& c) {
  auto r = run_seccomp_program(p, c);
  EXPECT_TRUE(r) << r.error().message();
  return r ? *r : 0xdeadbeef;
}

std::string refusal(const std::vector<SeccompProgram>& filters, const RemoteSyscall& c) {
  auto r = seccomp_filters_allow(filters, c);
  return r ? std::string("allowed") : r.error().message();
}

TEST(SeccompFilter, AnAllowListAllowsItsCallsAndKillsTheRest) {
  const SeccompProgram p = allow_list();
  EXPECT_EQ(run(p, kMmapRw), SECCOMP_RET_ALLOW);
  EXPECT_EQ(run(p, call(SYS_close, {3})), SECCOMP_RET_ALLOW);
  EXPECT_EQ(run(p, kMemfd), SECCOMP_RET_KILL_PROCESS);
  EXPECT_EQ(run(p, kMprotectRx), SECCOMP_RET_KILL_PROCESS);
  EXPECT_EQ(refusal({p}, kMmapRw), "allowed");
  EXPECT_EQ(refusal({p}, kMemfd),
            "the target's seccomp filter would kill it for memfd_create "
            "(SECCOMP_RET_KILL_PROCESS)");
}

TEST(SeccompFilter, ADeniedMemfdCreateIsRefusedAndNothingElse) {
  const std::vector<SeccompProgram> f = {deny(SYS_memfd_create, SECCOMP_RET_KILL_PROCESS)};
  EXPECT_EQ(refusal(f, kMmapRw), "allowed");
  EXPECT_EQ(refusal(f, kMprotectRx), "allowed");
  EXPECT_EQ(refusal(f, kMemfd),
            "the target's seccomp filter would kill it for memfd_create "
            "(SECCOMP_RET_KILL_PROCESS)");
}

TEST(SeccompFilter, AnArgumentFilterRefusesOnlyExecutableMappings) {
  const std::vector<SeccompProgram> f = {deny_exec()};
  EXPECT_EQ(refusal(f, kMmapRw), "allowed");
  EXPECT_EQ(refusal(f, kMemfd), "allowed");
  EXPECT_EQ(refusal(f, call(SYS_mprotect, {0x1000, 4096, PROT_READ})), "allowed");
  EXPECT_EQ(refusal(f, kMprotectRx),
            "the target's seccomp filter would kill it for mprotect (SECCOMP_RET_KILL_PROCESS)");
  EXPECT_EQ(refusal(f, call(SYS_mmap, {0, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, 0x22})),
            "the target's seccomp filter would kill it for mmap (SECCOMP_RET_KILL_PROCESS)");
  // Only the low word is looked at: a PROT_EXEC bit in the high word is not one.
  EXPECT_EQ(refusal(f, call(SYS_mprotect, {0x1000, 4096, uint64_t{PROT_EXEC} << 32})), "allowed");
}

TEST(SeccompFilter, ErrnoTrapTraceAndUserNotifAreRefusedSayingWhat) {
  EXPECT_EQ(refusal({deny(SYS_memfd_create, SECCOMP_RET_ERRNO | EPERM)}, kMemfd),
            "the target's seccomp filter would fail memfd_create with errno 1 (Operation not "
            "permitted, SECCOMP_RET_ERRNO)");
  EXPECT_EQ(refusal({deny(SYS_mmap, SECCOMP_RET_TRAP)}, kMmapRw),
            "the target's seccomp filter would send it SIGSYS for mmap (SECCOMP_RET_TRAP)");
  EXPECT_EQ(refusal({deny(SYS_mmap, SECCOMP_RET_TRACE | 7)}, kMmapRw),
            "the target's seccomp filter would hand mmap to a seccomp tracer "
            "(SECCOMP_RET_TRACE), which profctl is not: it would fail with ENOSYS");
  EXPECT_EQ(refusal({deny(SYS_mmap, SECCOMP_RET_USER_NOTIF)}, kMmapRw),
            "the target's seccomp filter would hand mmap to its supervisor process "
            "(SECCOMP_RET_USER_NOTIF)");
  EXPECT_EQ(refusal({deny(SYS_mmap, SECCOMP_RET_KILL_THREAD)}, kMmapRw),
            "the target's seccomp filter would kill the thread for mmap "
            "(SECCOMP_RET_KILL_THREAD)");
  EXPECT_EQ(refusal({deny(SYS_mmap, 0x00010000)}, kMmapRw),
            "the target's seccomp filter would return 0x00010000 for mmap, an action the "
            "kernel does not know and treats as a kill");
  // SECCOMP_RET_LOG runs the call (and logs it).
  EXPECT_EQ(refusal({deny(SYS_mmap, SECCOMP_RET_LOG)}, kMmapRw), "allowed");
}

TEST(SeccompFilter, StackedFiltersTakeTheMostRestrictiveAction) {
  const SeccompProgram log_all = {ret(SECCOMP_RET_LOG)};
  const SeccompProgram trace_mmap = deny(SYS_mmap, SECCOMP_RET_TRACE);
  const SeccompProgram errno_mmap = deny(SYS_mmap, SECCOMP_RET_ERRNO | EACCES);
  const SeccompProgram kill_mmap = deny(SYS_mmap, SECCOMP_RET_KILL_PROCESS);
  EXPECT_EQ(refusal({log_all, {ret(SECCOMP_RET_ALLOW)}}, kMmapRw), "allowed");
  // KILL_PROCESS (0x80000000, negative as the kernel compares) beats everything.
  EXPECT_EQ(refusal({log_all, trace_mmap, errno_mmap, kill_mmap}, kMmapRw),
            "the target's seccomp filter would kill it for mmap (SECCOMP_RET_KILL_PROCESS)");
  EXPECT_EQ(refusal({trace_mmap, log_all, errno_mmap}, kMmapRw),
            "the target's seccomp filter would fail mmap with errno 13 (Permission denied, "
            "SECCOMP_RET_ERRNO)");
  // Two of the same action: the first (the newest filter) gives the data, as in the kernel.
  EXPECT_EQ(refusal({deny(SYS_mmap, SECCOMP_RET_ERRNO | EPERM), errno_mmap}, kMmapRw),
            "the target's seccomp filter would fail mmap with errno 1 (Operation not "
            "permitted, SECCOMP_RET_ERRNO)");
  // No filter: nothing to refuse.
  EXPECT_EQ(refusal({}, kMmapRw), "allowed");
}

TEST(SeccompFilter, SeesTheInstructionPointerArchAndHighWords) {
  // RET A of each word of seccomp_data, checked against the call.
  const RemoteSyscall c = call(SYS_mmap, {1, 2, 0x0000000500000004, 6, 7, 8}, 0x123456789abc);
  auto word = [&](size_t off) { return run({load(off), stmt(BPF_RET | BPF_A, 0)}, c); };
  EXPECT_EQ(word(kNr), static_cast<uint32_t>(SYS_mmap));
  EXPECT_EQ(word(kArch), AUDIT_ARCH_X86_64);
  EXPECT_EQ(word(offsetof(seccomp_data, instruction_pointer)), 0x56789abcU);
  EXPECT_EQ(word(offsetof(seccomp_data, instruction_pointer) + 4), 0x1234U);
  EXPECT_EQ(word(arg_low(2)), 4U);
  EXPECT_EQ(word(arg_high(2)), 5U);
  EXPECT_EQ(word(arg_low(5)), 8U);
}

TEST(SeccompFilter, ArithmeticScratchMemoryAndRegisterJumps) {
  // A = nr; M[3] = A; X = 5; A = (A * 2 + X) ^ 1; A <<= X & 31 (X=5); A >>= 2;
  // X = A; A = M[3]; jgt X -> ret ALLOW else ret KILL.
  const SeccompProgram p = {
      load(kNr),                                           // 0  A = 9 (mmap)
      stmt(BPF_ST, 3),                                     // 1  M[3] = 9
      stmt(BPF_LDX | BPF_IMM, 5),                          // 2  X = 5
      stmt(BPF_ALU | BPF_MUL | BPF_K, 2),                  // 3  A = 18
      stmt(BPF_ALU | BPF_ADD | BPF_X, 0),                  // 4  A = 23
      stmt(BPF_ALU | BPF_XOR | BPF_K, 1),                  // 5  A = 22
      stmt(BPF_ALU | BPF_LSH | BPF_X, 0),                  // 6  A = 704
      stmt(BPF_ALU | BPF_RSH | BPF_K, 2),                  // 7  A = 176
      stmt(BPF_ALU | BPF_DIV | BPF_K, 8),                  // 8  A = 22
      stmt(BPF_ALU | BPF_SUB | BPF_K, 2),                  // 9  A = 20
      stmt(BPF_ALU | BPF_AND | BPF_K, 0x1c),               // 10 A = 20
      stmt(BPF_ALU | BPF_OR | BPF_K, 1),                   // 11 A = 21
      stmt(BPF_MISC | BPF_TAX, 0),                         // 12 X = 21
      stmt(BPF_LD | BPF_MEM, 3),                           // 13 A = 9
      jump(BPF_JMP | BPF_JGT | BPF_X, 0, 0, 2),            // 14 9 > 21? no -> 17
      ret(SECCOMP_RET_KILL_PROCESS),                       // 15
      ret(SECCOMP_RET_KILL_PROCESS),                       // 16
      stmt(BPF_MISC | BPF_TXA, 0),                         // 17 A = 21
      jump(BPF_JMP | BPF_JGE | BPF_K, 21, 1, 0),           // 18 -> 20
      ret(SECCOMP_RET_KILL_PROCESS),                       // 19
      stmt(BPF_ALU | BPF_NEG, 0),                          // 20 A = -21
      jump(BPF_JMP | BPF_JEQ | BPF_K, 0xffffffebU, 0, 1),  // 21 -> 22
      stmt(BPF_JMP | BPF_JA, 1),                           // 22 -> 24
      ret(SECCOMP_RET_KILL_PROCESS),                       // 23
      stmt(BPF_LD | BPF_W | BPF_LEN, 0),                   // 24 A = 64
      jump(BPF_JMP | BPF_JSET | BPF_K, 64, 0, 1),          // 25 -> 26
      ret(SECCOMP_RET_ERRNO | 42),                         // 26
      ret(SECCOMP_RET_KILL_PROCESS),                       // 27
  };
  EXPECT_EQ(run(p, kMmapRw), SECCOMP_RET_ERRNO | 42);
  // A division by X = 0 ends the program with 0, SECCOMP_RET_KILL_THREAD, as the kernel's.
  EXPECT_EQ(
      run({stmt(BPF_LDX | BPF_IMM, 0), stmt(BPF_ALU | BPF_DIV | BPF_X, 0), ret(SECCOMP_RET_ALLOW)},
          kMmapRw),
      SECCOMP_RET_KILL_THREAD);
}

// Programs the kernel would have refused: never evaluated, and the call is refused.
::testing::AssertionResult malformed(const SeccompProgram& p, const std::string& why) {
  auto r = run_seccomp_program(p, kMmapRw);
  if (r) {
    return ::testing::AssertionFailure() << "evaluated to " << *r;
  }
  if (r.error().what.find(why) == std::string::npos) {
    return ::testing::AssertionFailure() << "error \"" << r.error().what << "\" lacks " << why;
  }
  auto verdict = seccomp_filters_allow(std::vector<SeccompProgram>{p}, kMmapRw);
  if (verdict) {
    return ::testing::AssertionFailure() << "the call was allowed";
  }
  if (verdict.error().what.find("cannot tell whether the target's seccomp filter #0 allows "
                                "mmap: ") != 0) {
    return ::testing::AssertionFailure() << "refusal: " << verdict.error().what;
  }
  return ::testing::AssertionSuccess();
}

// Programs the kernel would not install, and what the interpreter says of each.
std::vector<std::pair<SeccompProgram, std::string>> malformed_programs() {
  const sock_filter allow = ret(SECCOMP_RET_ALLOW);
  return {
      {{}, "a program of 0 instructions"},
      {SeccompProgram(BPF_MAXINSNS + 1, allow), "a program of 4097 instructions"},
      // A conditional jump past the end, by jt and by jf, and unconditional ones (the largest
      // offset must not wrap pc around).
      {{load(kNr), jump(BPF_JMP | BPF_JEQ | BPF_K, 9, 2, 0), allow},
       "instruction 1: jump out of the program"},
      {{load(kNr), jump(BPF_JMP | BPF_JEQ | BPF_K, 9, 0, 1)},
       "instruction 1: jump out of the program"},
      {{stmt(BPF_JMP | BPF_JA, 1), allow}, "instruction 0: jump out of the program"},
      {{stmt(BPF_JMP | BPF_JA, 0xffffffffU), allow}, "instruction 0: jump out of the program"},
      // Loads outside seccomp_data or not word-aligned.
      {{load(64), allow}, "instruction 0: load at offset 64 outside seccomp_data"},
      {{load(2), allow}, "instruction 0: load at offset 2 outside seccomp_data"},
      {{load(0xfffffffcU), allow}, "outside seccomp_data"},
      // Byte loads, packet-relative loads, MOD, and garbage: not seccomp's.
      {{stmt(BPF_LD | BPF_B | BPF_ABS, 0), allow},
       "instruction 0: opcode 0x0030 is not one seccomp accepts"},
      {{stmt(BPF_LD | BPF_W | BPF_IND, 0), allow}, "opcode 0x0040"},
      {{stmt(BPF_ALU | BPF_MOD | BPF_K, 3), allow}, "opcode 0x0094"},
      {{stmt(0xffff, 0), allow}, "opcode 0xffff"},
      // Scratch memory: out of range, and read before written.
      {{stmt(BPF_ST, 16), allow}, "instruction 0: scratch memory word 16 out of range"},
      {{stmt(BPF_LDX | BPF_MEM, 0), allow}, "instruction 0: reads scratch memory never written"},
      // Division by a constant zero, shifts of 32 or more.
      {{stmt(BPF_ALU | BPF_DIV | BPF_K, 0), allow}, "instruction 0: division by zero"},
      {{stmt(BPF_ALU | BPF_LSH | BPF_K, 32), allow}, "instruction 0: shift by 32"},
      // No return at the end.
      {{allow, load(kNr)}, "does not end with a return"},
  };
}

TEST(SeccompFilter, MalformedProgramsAreRefused) {
  for (const auto& [program, why] : malformed_programs()) {
    EXPECT_TRUE(malformed(program, why));
  }
  // One bad filter among good ones still refuses.
  auto r = seccomp_filters_allow(
      std::vector<SeccompProgram>{{ret(SECCOMP_RET_ALLOW)}, {load(3), ret(SECCOMP_RET_ALLOW)}},
      kMmapRw);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().what,
            "cannot tell whether the target's seccomp filter #1 allows mmap: instruction 0: "
            "load at offset 3 outside seccomp_data");
}

// What the kernel itself does with `program` for `c` in a forked child: "refused" when it
// will not install the program, "errno N" when the call fails with N, "ran" when it
// succeeds, "signal N" when the child is killed. The same vocabulary for the interpreter's
// result, below: the two must agree on every program here.
std::string kernel_verdict(const SeccompProgram& program, const RemoteSyscall& c) {
  // The child must be able to exit: exit_group is let through first, then A is zeroed again
  // and the program runs as written (a program refused stays refused: its jumps, loads and
  // end are unchanged).
  SeccompProgram with_exit = {load(kNr), jump(BPF_JMP | BPF_JEQ | BPF_K, SYS_exit_group, 0, 1),
                              ret(SECCOMP_RET_ALLOW), stmt(BPF_LD | BPF_IMM, 0)};
  with_exit.insert(with_exit.end(), program.begin(), program.end());
  const pid_t pid = fork();
  if (pid < 0) {
    return "fork failed";
  }
  if (pid == 0) {
    // Only async-signal-safe calls until _exit.
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
      _exit(122);
    }
    sock_fprog prog{static_cast<unsigned short>(with_exit.size()), with_exit.data()};
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
      _exit(errno == EINVAL ? 121 : 122);
    }
    const long r = syscall(c.nr, c.args[0], c.args[1], c.args[2], c.args[3], c.args[4], c.args[5]);
    _exit(r != -1 ? 0 : errno < 120 ? errno : 123);
  }
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(st)) {
    return "signal " + std::to_string(WTERMSIG(st));
  }
  switch (WEXITSTATUS(st)) {
    case 0:
      return "ran";
    case 121:
      return "refused";
    case 122:
    case 123:
      return "child failed " + std::to_string(WEXITSTATUS(st));
    default:
      return "errno " + std::to_string(WEXITSTATUS(st));
  }
}

std::string interpreter_verdict(const SeccompProgram& program, const RemoteSyscall& c) {
  auto r = run_seccomp_program(program, c);
  if (!r) {
    return "refused";
  }
  switch (*r & SECCOMP_RET_ACTION_FULL) {
    case SECCOMP_RET_ALLOW:
    case SECCOMP_RET_LOG:
      return "ran";
    case SECCOMP_RET_ERRNO:
      return (*r & SECCOMP_RET_DATA) == 0 ? "ran"
                                          : "errno " + std::to_string(*r & SECCOMP_RET_DATA);
    case SECCOMP_RET_KILL_PROCESS:
    case SECCOMP_RET_KILL_THREAD:  // the child has one thread: the process dies
      return "signal " + std::to_string(SIGSYS);
    default:
      return "unexpected " + std::to_string(*r);
  }
}

// Every program of these tests, valid or not, on calls the child can make without harm
// (getppid's arguments are ignored by the kernel but seen by the filter).
TEST(SeccompFilter, TheKernelAgreesWithTheInterpreter) {
  auto self = read_file("/proc/self/status");
  if (!self || !parse_seccomp_status(*self).mode) {
    GTEST_SKIP() << "this kernel has no seccomp";
  }
  const RemoteSyscall ppid = call(SYS_getppid, {1, 2, 0x0000000500000004, 6, 7, 0x2a00000009});
  const RemoteSyscall mmap_rw =
      call(SYS_mmap, {0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, ~0ULL, 0});
  const RemoteSyscall mmap_rx =
      call(SYS_mmap, {0, 4096, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, ~0ULL, 0});
  std::vector<std::pair<SeccompProgram, RemoteSyscall>> cases = {
      {allow_list(), mmap_rw},
      {allow_list(), ppid},
      {deny(SYS_getppid, SECCOMP_RET_KILL_PROCESS), ppid},
      {deny(SYS_getppid, SECCOMP_RET_ERRNO | 77), ppid},
      {deny(SYS_getppid, SECCOMP_RET_ERRNO | 77), mmap_rw},
      {deny_exec(), mmap_rw},
      {deny_exec(), mmap_rx},
      {{stmt(BPF_LDX | BPF_IMM, 0), stmt(BPF_ALU | BPF_DIV | BPF_X, 0), ret(SECCOMP_RET_ALLOW)},
       ppid},
  };
  // Each word of seccomp_data the interpreter can know, read back as an errno (1..64).
  for (size_t off = 0; off < offsetof(seccomp_data, args) + 48; off += 4) {
    if (off == offsetof(seccomp_data, instruction_pointer) ||
        off == offsetof(seccomp_data, instruction_pointer) + 4) {
      continue;  // the child's own ip, not the call's
    }
    cases.push_back(
        {{load(off), stmt(BPF_ALU | BPF_AND | BPF_K, 0x3f), stmt(BPF_ALU | BPF_ADD | BPF_K, 1),
          stmt(BPF_ALU | BPF_OR | BPF_K, SECCOMP_RET_ERRNO), stmt(BPF_RET | BPF_A, 0)},
         ppid});
  }
  for (const auto& bad : malformed_programs()) {
    cases.emplace_back(bad.first, ppid);
  }
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& [program, c] = cases[i];
    EXPECT_EQ(interpreter_verdict(program, c), kernel_verdict(program, c)) << "case " << i;
  }
}

TEST(SeccompStatus, ModeCountAndShadowStackFromProcStatus) {
  const std::string text =
      "Name:\tapp\nState:\tS (sleeping)\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t3\n"
      "x86_Thread_features:\tshstk wrss \nx86_Thread_features_locked:\t\n";
  const SeccompStatus st = parse_seccomp_status(text);
  EXPECT_EQ(st.mode, 2);
  EXPECT_EQ(st.filters, 3u);
  EXPECT_TRUE(status_has_shadow_stack(text));
  // Locked but not enabled, or only wrss: no shadow stack.
  EXPECT_FALSE(
      status_has_shadow_stack("x86_Thread_features:\twrss \n"
                              "x86_Thread_features_locked:\tshstk \n"));
  EXPECT_FALSE(status_has_shadow_stack("x86_Thread_features:\t\n"));
  EXPECT_FALSE(status_has_shadow_stack("Name:\tshstk\n"));
  // An older kernel: no count; a kernel without seccomp: no mode; garbage: nothing.
  const SeccompStatus old = parse_seccomp_status("Seccomp:\t0\n");
  EXPECT_EQ(old.mode, 0);
  EXPECT_FALSE(old.filters);
  EXPECT_FALSE(parse_seccomp_status("Name:\tx\n").mode);
  EXPECT_FALSE(parse_seccomp_status("Seccomp:\tlots\nSeccomp_filters:\t-1\n").mode);
  EXPECT_FALSE(parse_seccomp_status("Seccomp:\tlots\nSeccomp_filters:\t-1\n").filters);
}

// This process's own threads: no filter (the test runner is not under seccomp, or the mode
// says so), and no shadow stack on a kernel that does not list one.
TEST(SeccompStatus, ThisThreadWithoutSeccompAllowsEverything) {
  auto self = read_file("/proc/self/status");
  if (!self) {
    GTEST_SKIP() << "no /proc/self/status";
  }
  if (parse_seccomp_status(*self).mode.value_or(0) != 0) {
    GTEST_SKIP() << "the test itself runs under seccomp";
  }
  EXPECT_TRUE(seccomp_allows(static_cast<pid_t>(syscall(SYS_gettid)), kMemfd));
  EXPECT_EQ(thread_has_shadow_stack(static_cast<pid_t>(syscall(SYS_gettid))),
            status_has_shadow_stack(*self));
}

}  // namespace
}  // namespace profctl
