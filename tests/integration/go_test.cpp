// SPDX-License-Identifier: MIT
// A Go program's stack has Go's file:line and the inlined frames gdb shows. Go writes DWARF
// without .debug_aranges, and libdw 0.188 then finds no compile unit for any pc (eu-addr2line
// answers ??:0): symbolize/cu_index.cpp finds it by the CUs' own ranges.
// Target: tests/targets/go/main.go (built with golang-go, a test dependency: no go, a failure).
#include <gtest/gtest.h>

#include <fstream>
#include <string>
#include <thread>

#include "support/capture.h"
#include "support/process.h"
#include "tests/common/go_tool.h"

namespace profctl::testing {
namespace {

// The line of `// MARK:name` in the Go source.
int go_marker_line(const std::string& name) {
  std::ifstream in(TARGET_GO_SOURCE);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    if (line.find("// MARK:" + name) != std::string::npos) {
      return n;
    }
  }
  return -1;
}

std::string str(const Json& j, const char* key) {
  return j.value(key, Json()).is_string() ? j[key].get<std::string>() : "";
}

TEST(GoStack, MainGoroutineHasGoLinesAndInlinedFrames) {
  PROFCTL_REQUIRE_PROFCTL();
  ASSERT_STRNE(TARGET_GO, "") << "go_target was not built. " << kNoGo;
  Child child({TARGET_GO});
  ASSERT_TRUE(child.wait_ready()) << "go_target did not say ready";
  const int read_line = go_marker_line("read");
  const int call_line = go_marker_line("call");
  ASSERT_GT(read_line, 0);
  ASSERT_GT(call_line, 0);

  // The main goroutine may not yet be in its read when it says ready: poll a few dumps.
  std::string last;
  for (int attempt = 0; attempt < 50; ++attempt) {
    RunResult r = profctl_stack(child.pid(), {"--format", "json"}, milliseconds(30000));
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    auto capture = parse_capture(r.out, child.pid());
    ASSERT_TRUE(capture);
    for (const Json& t : capture->at("threads")) {
      const Json& frames = t.at("frames");
      // syscall.Read (inlined) ... main.readOne at main.go:read ... main.main at main.go:call
      size_t read = frames.size();
      for (size_t i = 0; i < frames.size(); ++i) {
        if (str(frames[i], "function") == "syscall.Read") {
          read = i;
          break;
        }
      }
      if (read == frames.size()) {
        continue;
      }
      last = describe_frames(t);
      const Json& sr = frames[read];
      EXPECT_TRUE(sr.at("inlined").get<bool>()) << last;
      EXPECT_TRUE(str(sr, "file").ends_with("/syscall/syscall_unix.go")) << last;
      EXPECT_GT(sr.value("line", 0), 0) << last;
      ASSERT_LT(read + 2, frames.size()) << last;
      const Json& ro = frames[read + 1];
      EXPECT_EQ(str(ro, "function"), "main.readOne") << last;
      EXPECT_TRUE(str(ro, "file").ends_with("tests/targets/go/main.go")) << last;
      EXPECT_EQ(ro.value("line", 0), read_line) << last;
      // main.readOne is small: inlined into main.main, which is then the physical frame.
      size_t mm = read + 2;
      const Json& mf = frames[mm];
      EXPECT_EQ(str(mf, "function"), "main.main") << last;
      EXPECT_EQ(mf.value("line", 0), call_line) << last;
      EXPECT_FALSE(mf.at("inlined").get<bool>()) << last;
      EXPECT_EQ(str(frames[mm + 1], "function"), "runtime.main") << last;
      EXPECT_TRUE(str(frames[mm + 1], "file").ends_with("/runtime/proc.go")) << last;
      return;
    }
    std::this_thread::sleep_for(milliseconds(20));
  }
  FAIL() << "no thread of go_target is in syscall.Read; last dump:\n" << last;
}

}  // namespace
}  // namespace profctl::testing
