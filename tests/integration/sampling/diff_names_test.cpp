// SPDX-License-Identifier: MIT
// `profctl diff --fail-if` on a C++ program gates by the names people type: `cxx_work 1` and
// `cxx_work 3` (tests/targets/sampling/cxx_work.cpp) differ only in acc_cpu_hot(int), whose
// share of the job rises from 50% to 75% (+25 points) while work::Engine::step(long) const
// falls from 30% to 15% and each helper() from 10% to 5%. Gates are in points, which do not
// depend on the machine's speed. Each run uses 2 s of CPU (not a number of loops: a fast
// machine ran 2000 loops in 0.14 s, 60 samples, and a share drifted 16 points), so at 500 Hz
// ~1,000 samples give a share within ~1.6 points (one standard error), and +5pp is far from
// both the rise (+25) and the falls (-15, -5).
#include <gtest/gtest.h>

#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

class DiffNames : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!why_cannot_run().empty()) {
      return;
    }
    base_ = new TempDir();
    now_ = new TempDir();
    setup_error_ = capture(*base_, "1");
    if (setup_error_.empty()) {
      setup_error_ = capture(*now_, "3");
    }
  }
  static void TearDownTestSuite() {
    delete base_;
    delete now_;
    base_ = now_ = nullptr;
  }
  static std::string capture(const TempDir& dir, const std::string& factor) {
    RunResult r = profctl({"run", "--rate", "500", "--profiles", "cpu", "--format", "json", "-o",
                           dir.path(), "--", CXX_WORK, factor, "2000"},
                          RunOptions{milliseconds(120000), {}});
    return r.exit_code == 0 ? "" : "profctl run (factor " + factor + "): " + r.describe();
  }
  void SetUp() override {
    PROFCTL_REQUIRE_PROFCTL();
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }
  static RunResult diff(const std::vector<std::string>& gates) {
    std::vector<std::string> args{"diff", base_->file("capture.json"), now_->file("capture.json")};
    for (const std::string& g : gates) {
      args.insert(args.end(), {"--fail-if", g});
    }
    return profctl(args);
  }

  static TempDir* base_;
  static TempDir* now_;
  static std::string setup_error_;
};
TempDir* DiffNames::base_ = nullptr;
TempDir* DiffNames::now_ = nullptr;
std::string DiffNames::setup_error_;

TEST_F(DiffNames, ABareCxxNameGatesTheFunctionWhateverItsParameters) {
  RunResult r = diff({"cpu:acc_cpu_hot>+5pp"});
  EXPECT_EQ(r.exit_code, 5) << r.describe();
  EXPECT_NE(r.err.find("profctl: regression: cpu:acc_cpu_hot>+5pp: acc_cpu_hot total"),
            std::string::npos)
      << r.err;
  // As the reports print it, too (the only form that worked before).
  EXPECT_EQ(diff({"cpu:acc_cpu_hot(int)>+5pp"}).exit_code, 5);
  EXPECT_EQ(diff({"cpu:self:acc_cpu_hot>+5pp"}).exit_code, 0);  // unit() is the leaf
}

TEST_F(DiffNames, NamespacesInPartOrInFullWithOrWithoutParameters) {
  for (const char* name : {"step", "Engine::step", "work::Engine::step", "Engine::step(long)",
                           "work::Engine::step(long) const"}) {
    RunResult rise = diff({std::string("cpu:") + name + ">+5pp"});
    EXPECT_EQ(rise.exit_code, 0) << name << ": " << rise.describe();
    RunResult fall = diff({std::string("cpu:") + name + "<-5pp"});
    EXPECT_EQ(fall.exit_code, 5) << name << ": " << fall.describe();
  }
  EXPECT_EQ(diff({"cpu:a::helper>+5pp", "cpu:b::helper()>+5pp"}).exit_code, 0);
}

TEST_F(DiffNames, AnAmbiguousNameIsOneLineListingTheCandidatesAndExit1) {
  RunResult r = diff({"cpu:helper>+5pp"});
  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_EQ(r.err,
            "profctl: --fail-if 'cpu:helper>+5pp': 'helper' matches 2 functions: a::helper(), "
            "b::helper(); give one as the reports print it (e.g. 'a::helper()'), or /REGEX/ for "
            "all it matches\n");
  RunResult none = diff({"cpu:acc_cpu>+5pp"});
  EXPECT_EQ(none.exit_code, 1) << none.describe();
  EXPECT_NE(none.err.find("no function 'acc_cpu'"), std::string::npos) << none.err;
}

TEST_F(DiffNames, ARegexTakesEveryFunctionItFinds) {
  // Both helpers: 20% -> 10% of the job.
  EXPECT_EQ(diff({"cpu:/::helper\\(/<-5pp"}).exit_code, 5);
  EXPECT_EQ(diff({"cpu:/::helper\\(/>+5pp"}).exit_code, 0);
  EXPECT_EQ(diff({"cpu:/^acc_/>+5pp"}).exit_code, 5);
  RunResult bad = diff({"cpu:/(/>+5pp"});
  EXPECT_EQ(bad.exit_code, 1) << bad.describe();
  EXPECT_NE(bad.err.find("is not a regular expression"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace profctl::testing::sampling
