// SPDX-License-Identifier: MIT
// The end-of-capture summary (report/capture_summary.h) names functions as the text reports
// do, never a file or "??", and has a line for every profile kind captured.
#include <gtest/gtest.h>

#include <sstream>

#include "report/capture_summary.h"
#include "report/units.h"

namespace profctl {
namespace {

// A frame of a stripped program: no name, its function's start from the CFI.
Frame stripped(uint64_t offset, uint64_t start) {
  Frame f;
  f.pc = 0x555555554000 + offset;
  f.module = "/usr/bin/sort";
  f.offset = offset;
  f.function_start = start;
  return f;
}

Frame named(const std::string& fn, const std::string& module) {
  Frame f;
  f.pc = 0x7f0000001000;
  f.module = module;
  f.offset = 0x1000;
  f.function = fn;
  return f;
}

Profile heap_profile(int64_t inuse) {
  Profile p;
  p.sample_types = {{"alloc_objects", "count"},
                    {"alloc_space", "bytes"},
                    {"inuse_objects", "count"},
                    {"inuse_space", "bytes"}};
  p.default_sample_type = "inuse_space";
  const Frame malloc_frame = named("malloc", "/usr/lib/x86_64-linux-gnu/libc.so.6");
  p.samples = {{{3, 300, inuse > 0 ? 1 : 0, inuse}, {malloc_frame, stripped(0x4d35, 0x4d20)}, {}},
               {{1, 100, 0, 0}, {malloc_frame, stripped(0x5a01, 0x59f0)}, {}}};
  return p;
}

std::string summary(const Capture& c) {
  std::ostringstream out;
  write_capture_summary(c, CaptureSummary{}, out);
  return out.str();
}

TEST(CaptureSummary, AStrippedProgramsFunctionsAreModuleAndOffsetNotItsFile) {
  Capture c;
  c.profiles["heap"] = heap_profile(300);
  Profile cpu;
  cpu.sample_types = {{"samples", "count"}, {"cpu", "nanoseconds"}};
  cpu.samples = {{{1, 10}, {stripped(0x4d35, 0x4d20)}, {}},
                 {{3, 30}, {stripped(0x6000, 0x5ff0), stripped(0x4d35, 0x4d20)}, {}}};
  c.profiles["cpu"] = cpu;
  const std::string s = summary(c);
  EXPECT_NE(s.find("profctl: cpu (cpu): sort+0x5ff0 75.0%, sort+0x4d20 25.0%\n"), std::string::npos)
      << s;
  EXPECT_NE(s.find("profctl: heap (inuse_space): sort+0x4d20 100.0%\n"), std::string::npos) << s;
  EXPECT_EQ(s.find("/usr/bin/sort "), std::string::npos) << s;
  EXPECT_EQ(s.find("??"), std::string::npos) << s;
}

TEST(CaptureSummary, EveryKindHasALineAlsoWhenItsMainTypeIsEmpty) {
  Capture c;
  c.profiles["heap"] = heap_profile(0);
  Profile block;
  block.sample_types = {{"contentions", "count"}, {"delay", "nanoseconds"}};
  c.profiles["block"] = block;
  const std::string s = summary(c);
  EXPECT_NE(s.find("profctl: heap (inuse_space): nothing in use at the end; alloc_space: "
                   "sort+0x4d20 75.0%, sort+0x59f0 25.0%\n"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("profctl: block (delay): nothing recorded\n"), std::string::npos) << s;
}

TEST(FrameLine, AnUnnamedFunctionIsModuleAndOffsetNeverQuestionMarks) {
  EXPECT_EQ(report_detail::frame_line(stripped(0x4d35, 0x4d20)),
            "sort+0x4d20  (/usr/bin/sort+0x4d35)");
  Frame no_start = stripped(0x4d35, 0);
  no_start.function_start.reset();
  EXPECT_EQ(report_detail::frame_line(no_start), "sort+0x4d35  (/usr/bin/sort+0x4d35)");
}

}  // namespace
}  // namespace profctl
