// SPDX-License-Identifier: MIT
// /proc parsers on text: the target's /proc files are untrusted input.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <csignal>

#include "attach/proc.h"
#include "attach/wait_status.h"
#include "base/schedstat.h"

namespace profctl {
namespace {

TEST(ParseStat, CommWithSpacesAndParens) {
  auto st = parse_stat(
      "4242 (my (weird) app) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 17 0 0 20 0 3 0 1000");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->comm, "my (weird) app");
  EXPECT_EQ(st->state, 'S');
  EXPECT_EQ(st->flags, 4194560u);
  EXPECT_EQ(st->utime_ticks, 250u);
  EXPECT_EQ(st->stime_ticks, 17u);
}

TEST(ParseStat, ProcessorIsField39AndOptional) {
  // A whole line as the kernel writes it: field 39, the CPU, is 1.
  auto st = parse_stat(
      "28108 (cat) R 28105 28105 25592 0 -1 4194304 98 0 0 0 0 0 0 0 20 0 1 0 5100507 3133440 "
      "388 18446744073709551615 94897704509440 94897704529321 140737069787952 0 0 0 0 0 0 0 0 0 "
      "17 1 0 0 0 0 0 94897704545328 94897704546944 94898662227968 140737069795774 "
      "140737069795794 140737069795794 140737069797355 0");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->processor, 1);
  // Cut before it (as the short lines above): not shown, not an error.
  auto short_line = parse_stat("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 0");
  ASSERT_TRUE(short_line);
  EXPECT_EQ(short_line->processor, -1);
  // A field 39 that is no CPU number leaves it unknown.
  auto bad = parse_stat(
      "7 (x) R 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 zz 1");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->processor, -1);
}

TEST(ParseStatm, SizeIsTheFirstField) {
  EXPECT_EQ(parse_statm_size("5627 1134 980 6 0 171 0\n"), 5627u);
  EXPECT_FALSE(parse_statm_size(""));
  EXPECT_FALSE(parse_statm_size("x 1 2"));
  EXPECT_FALSE(parse_statm_size("-3 1 2"));
}

TEST(ParseStat, KernelThreadFlag) {
  auto st = parse_stat("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 0");
  ASSERT_TRUE(st);
  EXPECT_NE(st->flags & 0x00200000u, 0u);
}

TEST(ParseStat, RejectsGarbage) {
  EXPECT_FALSE(parse_stat(""));
  EXPECT_FALSE(parse_stat("12 (x"));
  EXPECT_FALSE(parse_stat("12 (x) SS 1"));
  EXPECT_FALSE(parse_stat("12 (x) S 1 2 3"));  // cut short
  EXPECT_FALSE(parse_stat("12 (x) S 1 2 3 4 5 notanumber 7 8 9 10 11 12"));
}

TEST(ParseStatus, Fields) {
  auto st = parse_status(
      "Name:\tcat\nUmask:\t0022\nState:\tt (tracing stop)\nTgid:\t77\nNgid:\t0\nPid:\t78\n"
      "PPid:\t1\nTracerPid:\t99\n");
  ASSERT_TRUE(st);
  EXPECT_EQ(st->state, 't');
  EXPECT_EQ(st->tgid, 77);
  EXPECT_EQ(st->ppid, 1);
  EXPECT_EQ(st->tracer_pid, 99);
  EXPECT_FALSE(parse_status("Name:\tx\n"));
}

TEST(ParseSyscall, BlockedAndRunning) {
  auto w = parse_syscall("202 0x55d0c0a04048 0x80 0x0 0x0 0x0 0x0 0x7ffd1d2a0f58 0x7f3a2c0b1234\n");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->nr, 202);
  EXPECT_EQ(w->args[0], 0x55d0c0a04048u);
  EXPECT_EQ(w->args[1], 0x80u);
  EXPECT_EQ(w->sp, 0x7ffd1d2a0f58u);
  EXPECT_EQ(w->pc, 0x7f3a2c0b1234u);
  EXPECT_FALSE(parse_syscall("running\n"));
  EXPECT_FALSE(parse_syscall("-1 0x7ffd1d2a0f58 0x7f3a2c0b1234\n"));
  EXPECT_FALSE(parse_syscall("202 0x1 0x2\n"));
}

TEST(ParseMaps, EntriesAndLookup) {
  auto maps = parse_maps(
      "55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 123 /usr/bin/app\n"
      "55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 123 /usr/bin/app\n"
      "7f0000000000-7f0000021000 rw-p 00000000 00:00 0 \n"
      "garbage line\n"
      "7ffd1d280000-7ffd1d2a1000 rw-p 00000000 00:00 0                          [stack]\n"
      "ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0 [vsyscall]\n");
  ASSERT_EQ(maps.size(), 5u);
  EXPECT_EQ(maps[1].path, "/usr/bin/app");
  EXPECT_TRUE(maps[1].executable);
  EXPECT_EQ(maps[1].offset, 0x1000u);
  EXPECT_EQ(maps[2].path, "");
  EXPECT_EQ(maps[3].path, "[stack]");
  EXPECT_FALSE(maps[4].readable);
  EXPECT_EQ(find_mapping(maps, 0x7ffd1d2a0f58), &maps[3]);
  EXPECT_EQ(find_mapping(maps, 0x55d0c0a01000), &maps[1]);
  EXPECT_EQ(find_mapping(maps, 0x55d0c0a00fff), &maps[0]);
  EXPECT_EQ(find_mapping(maps, 0x1000), nullptr);
  EXPECT_EQ(find_mapping(maps, 0x7f0000021000), nullptr);
}

TEST(ParseSchedstat, FieldsAndGarbage) {
  auto s = parse_schedstat("123456789 42 7\n");
  ASSERT_TRUE(s);
  EXPECT_EQ(s->run_ns, 123456789u);
  EXPECT_EQ(s->wait_ns, 42u);
  EXPECT_EQ(s->timeslices, 7u);
  EXPECT_FALSE(parse_schedstat(""));
  EXPECT_FALSE(parse_schedstat("12 34"));                        // a field missing
  EXPECT_FALSE(parse_schedstat("12 x4 5"));                      // not a number
  EXPECT_FALSE(parse_schedstat("-1 2 3"));                       // negative
  EXPECT_FALSE(parse_schedstat("99999999999999999999999 1 1"));  // out of range
}

TEST(SyscallName, KnownAndUnknown) {
  EXPECT_EQ(syscall_name(202), "futex");
  EXPECT_EQ(syscall_name(230), "clock_nanosleep");
  EXPECT_EQ(syscall_name(9999), "syscall_9999");
}

TEST(WaitStatus, Decodes) {
  // Encodings as the kernel builds them (wait(2) macros read them back).
  EXPECT_EQ(WaitStatus(3 << 8).kind(), WaitStatus::Kind::kExited);
  EXPECT_EQ(WaitStatus(3 << 8).exit_code(), 3);
  EXPECT_EQ(WaitStatus(SIGKILL).kind(), WaitStatus::Kind::kKilled);
  EXPECT_EQ(WaitStatus((SIGUSR1 << 8) | 0x7f).kind(), WaitStatus::Kind::kSignalStop);
  EXPECT_EQ(WaitStatus((SIGUSR1 << 8) | 0x7f).signal(), SIGUSR1);
  EXPECT_EQ(WaitStatus((128 << 16) | (SIGTRAP << 8) | 0x7f).kind(), WaitStatus::Kind::kEventStop);
  EXPECT_EQ(WaitStatus((128 << 16) | (SIGSTOP << 8) | 0x7f).kind(), WaitStatus::Kind::kGroupStop);
  WaitStatus clone((3 << 16) | (SIGTRAP << 8) | 0x7f);  // PTRACE_EVENT_CLONE
  EXPECT_EQ(clone.kind(), WaitStatus::Kind::kPtraceEvent);
  EXPECT_EQ(clone.ptrace_event(), 3);
}

}  // namespace
}  // namespace profctl
