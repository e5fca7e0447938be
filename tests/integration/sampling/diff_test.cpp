// `profctl diff` on real captures: sampling_truth paced 1 and paced 2 do the same work per
// second except work_fifty, which takes exactly twice as long in the second. The diff must
// name it with that factor, the gate must trip on it (exit 5) and not on work_thirty, a
// capture against itself is no regression, and what it writes is valid (schema, pprof).
#include <gtest/gtest.h>

#include <cmath>

#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

// --rate 250 for 4 s: the paced thread is on a CPU 30% (base) and 45% (new) of the time,
// so each capture has some 300-450 samples of it and ~150-300 in work_fifty. The share of
// work_fifty in a capture is then known to within ~6% (one standard error,
// sqrt((1-p)/(n p))), the ratio of two captures to within ~7%: 2 +/- 25% is more than 3.5
// standard errors either way, and it excludes 4/3, what a CPU-bound loop would give.
constexpr double kFactorLow = 1.5;
constexpr double kFactorHigh = 2.5;

class SamplingDiff : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!why_cannot_run().empty()) {
      return;
    }
    base_ = new TempDir();
    now_ = new TempDir();
    setup_error_ = capture(*base_, "1");
    if (setup_error_.empty()) {
      setup_error_ = capture(*now_, "2");
    }
  }
  static void TearDownTestSuite() {
    delete base_;
    delete now_;
    base_ = now_ = nullptr;
  }
  static std::string capture(const TempDir& dir, const std::string& factor) {
    Child target({SAMPLING_TRUTH, "paced", factor});
    if (!target.wait_ready()) {
      return "sampling_truth paced " + factor + " did not say ready";
    }
    RunResult r = profctl({"attach", std::to_string(target.pid()), "-d", "4s", "--rate", "250",
                           "--profiles", "cpu", "--format", "json", "-o", dir.path()});
    return r.exit_code == 0 ? "" : "profctl attach (factor " + factor + "): " + r.describe();
  }
  void SetUp() override {
    PROFCTL_REQUIRE_PROFCTL();
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }
  static std::string base() { return base_->file("capture.json"); }
  static std::string now() { return now_->file("capture.json"); }

  static TempDir* base_;
  static TempDir* now_;
  static std::string setup_error_;
};
TempDir* SamplingDiff::base_ = nullptr;
TempDir* SamplingDiff::now_ = nullptr;
std::string SamplingDiff::setup_error_;

const Json* cpu_type(const Json& diff) {
  const Json& types = diff["profiles"]["cpu"]["sample_types"];
  for (const Json& t : types) {
    if (t["type"] == "cpu") {
      return &t;
    }
  }
  return nullptr;
}

const Json* function_of(const Json& type, const std::string& name) {
  for (const Json& f : type["functions"]) {
    if (f["function"] == name) {
      return &f;
    }
  }
  return nullptr;
}

TEST_F(SamplingDiff, NamesTheFunctionThatTookTwiceAsLongWithItsFactor) {
  RunResult r = profctl({"diff", base(), now(), "--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const Json d = Json::parse(r.out);
  const Json* cpu = cpu_type(d);
  ASSERT_NE(cpu, nullptr) << r.out.substr(0, 2000);
  const Json* fifty = function_of(*cpu, "work_fifty");
  const Json* thirty = function_of(*cpu, "work_thirty");
  ASSERT_NE(fifty, nullptr);
  ASSERT_NE(thirty, nullptr);
  const double before = (*fifty)["total"]["base"];
  const double after = (*fifty)["total"]["new"];
  ASSERT_GT(before, 0);
  const double factor = after / before;
  EXPECT_GE(factor, kFactorLow) << "work_fifty " << before << " ns -> " << after << " ns";
  EXPECT_LE(factor, kFactorHigh) << "work_fifty " << before << " ns -> " << after << " ns";
  EXPECT_NEAR((*fifty)["total"]["change_percent"].get<double>(), 100 * (factor - 1), 1e-6);
  // The control: work_thirty's cost did not change.
  const double thirty_factor =
      (*thirty)["total"]["new"].get<double>() / (*thirty)["total"]["base"].get<double>();
  EXPECT_GT(thirty_factor, 1 / 1.35) << (*thirty).dump();
  EXPECT_LT(thirty_factor, 1.35) << (*thirty).dump();
  // Of the three, work_fifty is the regression the text shows first.
  RunResult text = profctl({"diff", base(), now()});
  ASSERT_EQ(text.exit_code, 0) << text.describe();
  const size_t at = text.out.find("largest regressions first:");
  ASSERT_NE(at, std::string::npos) << text.out;
  const size_t fifty_row = text.out.find("  work_fifty\n", at);
  ASSERT_NE(fifty_row, std::string::npos) << text.out;
  EXPECT_EQ(text.out.find("  work_thirty\n", at) == std::string::npos ||
                text.out.find("  work_thirty\n", at) > fifty_row,
            true)
      << text.out;
}

TEST_F(SamplingDiff, TheGateTripsOnTheRegressionOnly) {
  RunResult r = profctl({"diff", base(), now(), "--fail-if", "cpu:work_fifty>+50%", "--fail-if",
                         "cpu:work_thirty>+50%"});
  EXPECT_EQ(r.exit_code, 5) << r.describe();
  EXPECT_NE(r.err.find("profctl: regression: cpu:work_fifty>+50%: work_fifty total"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("work_thirty>"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("  FAIL  cpu:work_fifty>+50%"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  ok    cpu:work_thirty>+50%"), std::string::npos) << r.out;
  RunResult pass = profctl({"diff", base(), now(), "--fail-if", "cpu:work_thirty>+50%"});
  EXPECT_EQ(pass.exit_code, 0) << pass.describe();
}

TEST_F(SamplingDiff, ACaptureAgainstItselfIsNoRegression) {
  RunResult r =
      profctl({"diff", now(), now(), "--format", "json", "--fail-if", "cpu:work_fifty>+0%",
               "--fail-if", "cpu:total>0ns", "--fail-if", "cpu:self:paced_unit>0pp"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const Json d = Json::parse(r.out);
  EXPECT_EQ(d["regressed"], false);
  EXPECT_EQ(d["normalized"], false);
  for (const Json& t : d["profiles"]["cpu"]["sample_types"]) {
    EXPECT_EQ(t["total"]["change"], 0);
    for (const Json& f : t["functions"]) {
      EXPECT_EQ(f["total"]["change"], 0) << f.dump();
      EXPECT_EQ(f["self"]["change"], 0) << f.dump();
    }
  }
  RunResult text = profctl({"diff", now(), now()});
  EXPECT_EQ(text.exit_code, 0) << text.describe();
  EXPECT_NE(text.out.find("no function changed"), std::string::npos) << text.out;
}

TEST_F(SamplingDiff, WritesValidJsonTextAndAPprofPairForDiffBase) {
  TempDir out;
  RunResult r = profctl({"diff", base(), now(), "-o", out.path(), "--fail-if", "cpu:total>+1000%"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto json = read_text(out.file("diff.json"));
  ASSERT_TRUE(json);
  EXPECT_TRUE(schema_valid(*json, "profctl.diff-1.schema.json"));
  EXPECT_EQ(Json::parse(*json)["gates"].size(), 1u);
  EXPECT_EQ(read_text(out.file("diff.txt")).value_or(""), r.out);
  auto top =
      go_pprof({"-top", "-diff_base", out.file("cpu.base.pb.gz"), out.file("cpu.new.pb.gz")});
  ASSERT_TRUE(top) << kNoGo;
  ASSERT_EQ(top->exit_code, 0) << top->describe();
  // pprof prints the change; work_fifty's cum grew by about its base (x2), so it is positive.
  bool found = false;
  for (size_t at = 0; (at = top->out.find("work_fifty", at)) != std::string::npos; ++at) {
    const size_t line = top->out.rfind('\n', at) + 1;
    const std::string row = top->out.substr(line, at - line);
    found = true;
    EXPECT_EQ(row.find('-'), std::string::npos) << "work_fifty shrank?\n" << top->out;
  }
  EXPECT_TRUE(found) << top->out;
}

TEST_F(SamplingDiff, BadInputIsOneLineAndExit1) {
  auto one_line = [](const RunResult& r) {
    return r.err.find('\n') == r.err.size() - 1 && r.err.rfind("profctl: ", 0) == 0;
  };
  for (const std::vector<std::string>& gate :
       {std::vector<std::string>{"--fail-if", "cpu:work_fifty"},
        std::vector<std::string>{"--fail-if", "cpu:work_fifty>+10 parsecs"},
        std::vector<std::string>{"--fail-if", "cpu:no_such_function>+10%"},
        std::vector<std::string>{"--fail-if", "heap:total>+10%"},
        std::vector<std::string>{"--fail-if", "cpu:total>+1MiB"},
        std::vector<std::string>{"--format", "yaml"}}) {
    std::vector<std::string> args{"diff", base(), now()};
    args.insert(args.end(), gate.begin(), gate.end());
    RunResult r = profctl(args);
    EXPECT_EQ(r.exit_code, 1) << gate.back() << ": " << r.describe();
    EXPECT_TRUE(one_line(r)) << r.err;
  }
  TempDir other;
  auto doc = Json::parse(read_text(now()).value_or("{}"));
  doc["target"]["exe"] = "/usr/bin/something-else";
  ASSERT_TRUE(write_text(other.file("other.json"), doc.dump()));
  RunResult different = profctl({"diff", base(), other.file("other.json")});
  EXPECT_EQ(different.exit_code, 1) << different.describe();
  EXPECT_NE(different.err.find("different programs"), std::string::npos) << different.err;
  EXPECT_TRUE(one_line(different)) << different.err;
  EXPECT_EQ(profctl({"diff", base(), other.file("other.json"), "--any-target"}).exit_code, 0);
  doc["schema"] = "profctl.capture/2";
  ASSERT_TRUE(write_text(other.file("newer.json"), doc.dump()));
  RunResult newer = profctl({"diff", base(), other.file("newer.json")});
  EXPECT_EQ(newer.exit_code, 1) << newer.describe();
  EXPECT_TRUE(one_line(newer)) << newer.err;
  RunResult missing = profctl({"diff", base(), other.file("missing.json")});
  EXPECT_EQ(missing.exit_code, 1) << missing.describe();
}

}  // namespace
}  // namespace profctl::testing::sampling
