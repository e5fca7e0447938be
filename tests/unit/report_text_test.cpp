// SPDX-License-Identifier: MIT
// Text outputs for people and flame graph tools: the stack dump, the profile report and
// folded stacks, each compared with the exact expected text.
#include <gtest/gtest.h>

#include <sstream>

#include "report/folded_writer.h"
#include "report/profile_text.h"
#include "report/stack_text.h"
#include "tests/unit/report_fixture.h"

namespace profctl {
namespace {

using testing::rich_capture;

std::string stack_text(const Capture& c) {
  std::ostringstream out;
  write_stack_text(c, out);
  return out.str();
}

std::string profile_text(const Capture& c, const std::string& kind, size_t top_n) {
  std::ostringstream out;
  write_profile_text(c, kind, out, TextOptions{top_n, false, ""});
  return out.str();
}

std::string folded(const Capture& c, const std::string& kind, size_t index = 0) {
  std::ostringstream out;
  write_folded(c, kind, out, index);
  return out.str();
}

TEST(ReportStackText, DumpsEveryThread) {
  EXPECT_EQ(stack_text(rich_capture()),
            R"(profctl stack: pid 4242 (/usr/bin/app) — 3 threads, world stopped 0.41 ms
warning: target exited during the capture

thread 4242 "app" [sleeping, futex wait 0x7f3a2c0041a0, cpu 1.20s]:
  #0  0x00007f3a2c0b1234 in __futex_abstimed_wait_common  (/usr/lib/x86_64-linux-gnu/libc.so.6+0x8a234)
  #1  (inlined)          in helper()  at src/worker.h:10
  #1  0x000055d0c0a01300 in Worker::run()  at src/worker.cpp:45  (/usr/bin/app+0x1300)
  #2  0x000055d0c0a02000 in app+0x2000  (/usr/bin/app+0x2000)
  #3  0x000055d0c0a00f00 in main  at src/main.cpp:12  (/usr/bin/app+0xf00)

thread 4243 "worker-1" [running, cpu 5.00ms]:
  #0  0x000055d0c0a01100 in burn()  at src/burn.cpp:7  (/usr/bin/app+0x1100)
  #1  0x000055d0c0a01234 in Worker::run()  at src/worker.cpp:42  (/usr/bin/app+0x1234)
  ... (truncated: stack copy limit (64 KiB) reached)

thread 4244 "io \"disk\"" [disk, cpu 0]:
  (no frames)
)");
}

TEST(ReportStackText, WaitsStatesAndWideFrameNumbers) {
  Capture c;
  c.target = {7, "/bin/x", {}};
  c.pause.world_stopped_ns = 1'234'567;
  CaptureThread t;
  t.tid = 7;
  t.name = "x\tname";
  t.state = "t";
  t.wait_syscall = "epoll_wait";
  t.cpu_ns = 2'500'000'000;
  for (int i = 0; i < 11; ++i) {
    t.frames.push_back(testing::frame(0x1000 + i, "/bin/x", 0x1000 + i, "f" + std::to_string(i),
                                      "x.c", std::nullopt));
  }
  t.frames[10].file.reset();
  CaptureThread u;
  u.tid = 8;
  u.state = "Q";
  u.wait_address = 0xabc;
  u.truncated = true;
  c.threads = {t, u};
  EXPECT_EQ(stack_text(c), R"(profctl stack: pid 7 (/bin/x) — 2 threads, world stopped 1.23 ms

thread 7 "x\x09name" [tracing-stop, in epoll_wait, cpu 2.50s]:
  #0   0x0000000000001000 in f0  at x.c  (/bin/x+0x1000)
  #1   0x0000000000001001 in f1  at x.c  (/bin/x+0x1001)
  #2   0x0000000000001002 in f2  at x.c  (/bin/x+0x1002)
  #3   0x0000000000001003 in f3  at x.c  (/bin/x+0x1003)
  #4   0x0000000000001004 in f4  at x.c  (/bin/x+0x1004)
  #5   0x0000000000001005 in f5  at x.c  (/bin/x+0x1005)
  #6   0x0000000000001006 in f6  at x.c  (/bin/x+0x1006)
  #7   0x0000000000001007 in f7  at x.c  (/bin/x+0x1007)
  #8   0x0000000000001008 in f8  at x.c  (/bin/x+0x1008)
  #9   0x0000000000001009 in f9  at x.c  (/bin/x+0x1009)
  #10  0x000000000000100a in f10  (/bin/x+0x100a)

thread 8 "" [Q, waiting on 0xabc, cpu 0]:
  ... (truncated)
)");
}

TEST(ReportStackText, StateNames) {
  EXPECT_EQ(thread_state_name("R"), "running");
  EXPECT_EQ(thread_state_name("S"), "sleeping");
  EXPECT_EQ(thread_state_name("D"), "disk");
  EXPECT_EQ(thread_state_name("T"), "stopped");
  EXPECT_EQ(thread_state_name("t"), "tracing-stop");
  EXPECT_EQ(thread_state_name("Z"), "zombie");
  EXPECT_EQ(thread_state_name("X"), "dead");
  EXPECT_EQ(thread_state_name("I"), "idle");
  EXPECT_EQ(thread_state_name(""), "unknown");
}

TEST(ReportProfileText, CpuTopStacksAndFunctions) {
  EXPECT_EQ(
      profile_text(rich_capture(), "cpu", 3),
      R"(profctl cpu profile: pid 4242 (/usr/bin/app), start 2026-11-24T10:00:00Z, duration 30.50s
partial: 3 samples lost; totals are lower bounds
total (lower bounds): samples 11, cpu 111.11ms (5 entries, 4 distinct stacks)
period: cpu 10.10ms
lost 3 samples
warning: target exited during the capture

top 3 of 4 stacks by cpu:

  #1  cpu 50.51ms (45.45%), samples 5
        burn()  at src/burn.cpp  (/usr/bin/app)
        Worker::run()  at src/worker.cpp  (/usr/bin/app)
        main  at src/main.cpp  (/usr/bin/app)

  #2  cpu 40.40ms (36.36%), samples 4
        __vdso_clock_gettime  ([vdso])
        burn()  at src/burn.cpp  (/usr/bin/app)
        Worker::run()  at src/worker.cpp  (/usr/bin/app)
        main  at src/main.cpp  (/usr/bin/app)

  #3  cpu 10.10ms (9.09%), samples 1
        helper()  at src/worker.h  (inlined)
        Worker::run()  at src/worker.cpp  (/usr/bin/app)
        main  at src/main.cpp  (/usr/bin/app)

top 3 of 6 functions by cpu:
        flat   flat%    sum%         cum    cum%  function
     50.51ms  45.45%  45.45%     90.91ms  81.82%  burn()
     40.40ms  36.36%  81.82%     40.40ms  36.36%  __vdso_clock_gettime
     10.10ms   9.09%  90.91%     10.10ms   9.09%  app+0x2000
)");
}

TEST(ReportProfileText, OtherProfilesUseTheLastSampleTypeAndBytes) {
  // The heap profile has a text of its own (report_heap_test.cpp); its numbers under another
  // kind go through the generic writer, ranked by the last sample type, in bytes.
  Capture c = rich_capture();
  c.profiles["allocs"] = c.profiles.at("heap");
  c.profiles["allocs"].default_sample_type.reset();
  c.profiles["allocs"].heap.reset();
  const std::string text = profile_text(c, "allocs", 2);
  EXPECT_NE(text.find("total: alloc_objects 54, alloc_space 9.32KiB, inuse_objects 22, "
                      "inuse_space 6.17KiB"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("top 2 of 3 stacks by inuse_space:"), std::string::npos) << text;
  EXPECT_NE(text.find("#1  inuse_space 4.07KiB (66.00%)"), std::string::npos) << text;
  EXPECT_NE(text.find("functions by inuse_space:"), std::string::npos) << text;
}

// Samples at different pcs of one function are one stack and one row; --lines splits them
// by source line. An unnamed function is one row for all its pcs (named by its start).
TEST(ReportProfileText, GroupsByFunctionAndByLineWithLines) {
  Capture c;
  c.target = {1, "/bin/x", {}};
  Profile p;
  p.sample_types = {{"samples", "count"}};
  Frame a1 = testing::frame(0x1010, "/bin/x", 0x1010, "work", "x.c", 10);
  Frame a2 = testing::frame(0x1020, "/bin/x", 0x1020, "work", "x.c", 11);
  Frame caller = testing::frame(0x2000, "/bin/x", 0x2000, "main", "x.c", 20);
  Frame lib1 = testing::frame(0x7000, "/lib/libs.so", 0x5010, std::nullopt);
  Frame lib2 = testing::frame(0x7020, "/lib/libs.so", 0x5030, std::nullopt);
  lib1.function_start = lib2.function_start = 0x5000;
  p.samples = {{{3}, {a1, caller}, {}},
               {{2}, {a2, caller}, {}},
               {{1}, {lib1, a1, caller}, {}},
               {{1}, {lib2, a2, caller}, {}}};
  c.profiles["cpu"] = p;
  const std::string by_function = profile_text(c, "cpu", 10);
  EXPECT_NE(by_function.find("(4 entries, 2 distinct stacks)"), std::string::npos) << by_function;
  EXPECT_NE(by_function.find("  #1  samples 5 (71.43%)\n        work  at x.c  (/bin/x)\n"),
            std::string::npos)
      << by_function;
  EXPECT_NE(by_function.find("top 3 of 3 functions by samples:"), std::string::npos) << by_function;
  EXPECT_NE(by_function.find("28.57%  libs.so+0x5000\n"), std::string::npos) << by_function;

  std::ostringstream lines;
  write_profile_text(c, "cpu", lines, TextOptions{10, true, ""});
  EXPECT_NE(lines.str().find("(4 entries, 4 distinct stacks)"), std::string::npos) << lines.str();
  EXPECT_NE(lines.str().find("work  at x.c:11  (/bin/x)"), std::string::npos) << lines.str();
  EXPECT_NE(lines.str().find("  work x.c:10\n"), std::string::npos) << lines.str();

  EXPECT_EQ(folded(c, "cpu"), "main;work 5\nmain;work;libs.so+0x5000 2\n");
  std::ostringstream folded_lines;
  write_folded(c, "cpu", folded_lines, 0, true);
  EXPECT_EQ(folded_lines.str(),
            "main x.c:20;work x.c:10 3\nmain x.c:20;work x.c:10;libs.so+0x5000 1\n"
            "main x.c:20;work x.c:11 2\nmain x.c:20;work x.c:11;libs.so+0x5000 1\n");
}

TEST(ReportProfileText, MissingOrEmptyProfile) {
  EXPECT_EQ(profile_text(rich_capture(), "mutex", 10),
            "profctl: no mutex profile in this capture\n");
  Capture c;
  c.profiles["block"].sample_types = {{"contentions", "count"}, {"delay", "nanoseconds"}};
  EXPECT_EQ(profile_text(c, "block", 10),
            R"(profctl block profile: pid 0 (), start unknown, duration 0
total: contentions 0, delay 0 (0 entries, 0 distinct stacks)

top 0 of 0 stacks by delay:

top 0 of 0 functions by delay:
        flat   flat%    sum%         cum    cum%  function
)");
}

TEST(ReportFolded, MergesSortsAndKeepsInlinedFrames) {
  EXPECT_EQ(folded(rich_capture(), "cpu"), R"(main;Worker::run();burn() 5
main;Worker::run();burn();__vdso_clock_gettime 4
main;Worker::run();helper() 1
main;app+0x2000 1
)");
  EXPECT_EQ(folded(rich_capture(), "cpu", 1), R"(main;Worker::run();burn() 50505050
main;Worker::run();burn();__vdso_clock_gettime 40404040
main;Worker::run();helper() 10101010
main;app+0x2000 10101010
)");
}

TEST(ReportFolded, EscapesSeparatorsAndHandlesEdgeCases) {
  Capture c;
  Profile& p = c.profiles["wall"];
  p.sample_types = {{"samples", "count"}};
  p.samples = {{{2}, {testing::frame(1, "/m", 1, "a;b\nc")}, {}}, {{3}, {}, {}}};
  EXPECT_EQ(folded(c, "wall"), "[no frames] 3\na:b c 2\n");
  EXPECT_EQ(folded(c, "wall", 1), "");
  EXPECT_EQ(folded(c, "cpu"), "");
}

}  // namespace
}  // namespace profctl
