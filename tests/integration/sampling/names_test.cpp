// SPDX-License-Identifier: MIT
// Names everywhere as in the text report, on a stripped program (names_target_stripped: no
// .symtab, no DWARF): every output names its functions by module+offset
// ("names_target_stripped+0x1234", from the CFI's function start), none says "??", the
// end-of-capture summary names functions, not the program's file, and it has a line for
// every profile kind captured, the heap's too when nothing is in use at the end.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

namespace fs = std::filesystem;

constexpr const char* kStrippedName = "names_target_stripped+0x";

class Names : public ::testing::Test {
 protected:
  void SetUp() override { PROFCTL_REQUIRE_PROFCTL(); }

  RunResult run(const TempDir& out, const std::string& mode) {
    return profctl({"run", "--profiles", "cpu,heap", "--mem-rate", "1", "-o", out.path(), "--",
                    NAMES_TARGET_STRIPPED, mode},
                   RunOptions{milliseconds(120000), {}});
  }
};

// The summary's line for `kind`, "" when there is none.
std::string summary_line(const std::string& err, const std::string& kind) {
  const std::string prefix = "profctl: " + kind + " (";
  const size_t at = err.find(prefix);
  return at == std::string::npos ? "" : err.substr(at, err.find('\n', at) - at);
}

TEST_F(Names, NoQuestionMarksInAnyOutputOfAStrippedProgram) {
  TempDir out;
  RunResult r = run(out, "keep");
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.err.find("??"), std::string::npos) << r.err;
  size_t checked = 0;
  for (const auto& entry : fs::directory_iterator(out.path())) {
    const std::string name = entry.path().filename().string();
    // pprof files are read through pprof below; a flame graph page's script may use "??".
    if (name.ends_with(".pb.gz") || name.ends_with(".html")) {
      continue;
    }
    const std::optional<std::string> text = read_text(entry.path().string());
    ASSERT_TRUE(text) << name;
    EXPECT_EQ(text->find("??"), std::string::npos) << name << ":\n" << text->substr(0, 4000);
    ++checked;
  }
  EXPECT_GE(checked, 5u);  // capture.json, cpu and heap .txt and .folded
  const std::string heap = read_text(out.file("heap.txt")).value_or("");
  EXPECT_NE(heap.find(kStrippedName), std::string::npos) << heap.substr(0, 4000);
  const std::string cpu = read_text(out.file("cpu.txt")).value_or("");
  EXPECT_NE(cpu.find(kStrippedName), std::string::npos) << cpu.substr(0, 4000);
  for (const char* kind : {"cpu", "heap"}) {
    auto top = go_pprof({"-top", "-symbolize=none", out.file(std::string(kind) + ".pb.gz")});
    ASSERT_TRUE(top) << kNoGo;
    ASSERT_EQ(top->exit_code, 0) << top->describe();
    EXPECT_EQ(top->out.find("??"), std::string::npos) << top->out;
    EXPECT_NE(top->out.find(kStrippedName), std::string::npos) << top->out;
  }
  // heap.txt's memory map: pprof charges its addresses to modules, never "<unknown>".
  auto legacy =
      go_pprof({"-top", "-symbolize=none", "-sample_index=alloc_space", out.file("heap.txt")});
  ASSERT_TRUE(legacy) << kNoGo;
  ASSERT_EQ(legacy->exit_code, 0) << legacy->describe();
  EXPECT_EQ(legacy->out.find("<unknown>"), std::string::npos) << legacy->out;
  EXPECT_NE(legacy->out.find("[names_target_stripped]"), std::string::npos) << legacy->out;
}

TEST_F(Names, TheSummaryNamesFunctionsNotTheProgramsFile) {
  TempDir out;
  RunResult r = run(out, "keep");
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const std::string cpu = summary_line(r.err, "cpu");
  const std::string heap = summary_line(r.err, "heap");
  // alloc_kept's 64 x 1000 bytes are all that is in use at the end.
  EXPECT_TRUE(heap.starts_with("profctl: heap (inuse_space): names_target_stripped+0x")) << r.err;
  EXPECT_TRUE(heap.ends_with(" 100.0%")) << r.err;
  EXPECT_NE(cpu.find(kStrippedName), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(std::string(NAMES_TARGET_STRIPPED) + " "), std::string::npos) << r.err;
}

TEST_F(Names, TheHeapHasItsSummaryLineWhenNothingIsInUseAtTheEnd) {
  TempDir out;
  RunResult r = run(out, "free");
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(summary_line(r.err, "heap")
                  .starts_with("profctl: heap (inuse_space): nothing in use at the end; "
                               "alloc_space: names_target_stripped+0x"))
      << r.err;
  EXPECT_FALSE(summary_line(r.err, "cpu").empty()) << r.err;
}

}  // namespace
}  // namespace profctl::testing::sampling
