// SPDX-License-Identifier: MIT
// The compiled CFI tables against libdwfl on real programs: `profctl run` with
// PROFCTL_UNWIND_TABLES=check unwinds every sample the tables finish with libdwfl too and
// logs how many differ. CPython sorting dicts, and bash running coreutils (seq, sort,
// md5sum) with a loop of its own: hundreds of stacks through the tables, none different.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <regex>
#include <string>
#include <vector>

#include "tests/integration/support/process.h"

namespace profctl::testing {
namespace {

struct Checked {
  uint64_t stacks = 0;
  uint64_t differ = 0;
  uint64_t through_tables = 0;
};

// Sums profctl's "-v" lines of every unwinder (one per address space and collector).
Checked parse(const std::string& err) {
  Checked c;
  static const std::regex checked(
      R"(CFI tables checked against libdwfl: (\d+) stacks, (\d+) differ)");
  static const std::regex tables(R"(unwound (\d+) stacks through CFI tables)");
  for (auto it = std::sregex_iterator(err.begin(), err.end(), checked);
       it != std::sregex_iterator(); ++it) {
    c.stacks += std::stoull((*it)[1]);
    c.differ += std::stoull((*it)[2]);
  }
  for (auto it = std::sregex_iterator(err.begin(), err.end(), tables); it != std::sregex_iterator();
       ++it) {
    c.through_tables += std::stoull((*it)[1]);
  }
  return c;
}

class CfiCheck : public ::testing::Test {
 protected:
  void SetUp() override { setenv("PROFCTL_UNWIND_TABLES", "check", 1); }
  void TearDown() override { unsetenv("PROFCTL_UNWIND_TABLES"); }

  void check(const std::vector<std::string>& command, uint64_t min_stacks) {
    std::vector<std::string> argv = {PROFCTL_BIN, "run", "-v", "--rate", "500", "--"};
    argv.insert(argv.end(), command.begin(), command.end());
    RunResult r = run(argv, {.timeout = std::chrono::milliseconds(120000), .uid = std::nullopt});
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    Checked c = parse(r.err);
    EXPECT_EQ(c.differ, 0u) << r.err.substr(0, 4000);
    EXPECT_GE(c.stacks, min_stacks) << r.err.substr(0, 4000);
    EXPECT_EQ(c.stacks, c.through_tables);
  }
};

TEST_F(CfiCheck, CPythonSamplesUnwindAsLibdwfl) {
  if (access("/usr/bin/python3", X_OK) != 0) {
    GTEST_SKIP() << "no /usr/bin/python3";
  }
  check({"/usr/bin/python3", "-c",
         "d=[{'k':i,'v':str(i)*3} for i in range(200000)]\n"
         "for _ in range(3): sorted(d, key=lambda x: x['v'])\n"},
        50);  // ~0.5 s of CPU at 500 Hz: a running thread's record is its wall sample too
}

TEST_F(CfiCheck, BashAndCoreutilsSamplesUnwindAsLibdwfl) {
  check({"/bin/bash", "-c",
         "for i in $(seq 40000); do x=$((i*i)); done; "
         "seq 300000 | sort -R | sort -n | md5sum > /dev/null"},
        100);
}

}  // namespace
}  // namespace profctl::testing
