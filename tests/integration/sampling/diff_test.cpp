// SPDX-License-Identifier: MIT
// `profctl diff` on real captures: `sampling_truth batch 1` and `batch 2` run the same job
// (two workers, loops of work_fifty, work_thirty, work_twenty until each used 1.5 s of CPU;
// a fixed loop count gave ~150 samples on a fast machine) except that
// work_fifty does twice the work in the second. The diff must show that factor, the gate must
// trip on it (exit 5) and not on work_thirty, a capture against itself is no regression, and
// what diff writes is valid (schema, pprof -diff_base).
//
// What one unit of work costs in CPU time is not fixed on a shared machine: the same job
// took from 1.0 s to 2.7 s of CPU in four runs here (other jobs on the SMT sibling,
// frequency). So the factor is measured against the functions that did not change, in the
// same run: work_fifty's factor over that of work_thirty and work_twenty together is 2,
// whatever a unit cost and however many loops ran. Each run has ~750 samples at 250 Hz (two
// threads, 3 s of CPU); a function with half of them is known to within ~3% (one standard error,
// sqrt((1-p)/(n p))), and the ratio of four such estimates to within ~7%. Attribution adds
// a few percent more on a busy machine (factors of 1.63 to 2.53 in 18 runs, some two at a
// time, while builds ran alongside), so 2 is checked within [1.4, 3.0], which still excludes
// 1 (no change) and 4/3 (a share-only effect). The same holds for the gate: the share of work_fifty
// rises by 16.7 percentage points (50% to 66.7%), so the gate is in points ("+5pp"), while its
// change in ms depends on the machine.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>

#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

constexpr double kFactorLow = 1.4;
constexpr double kFactorHigh = 3.0;

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
    RunResult r = profctl({"run", "--rate", "250", "--profiles", "cpu", "--format", "json", "-o",
                           dir.path(), "--", SAMPLING_TRUTH, "batch", factor, "1500ms"},
                          RunOptions{milliseconds(120000), {}});
    return r.exit_code == 0 ? "" : "profctl run (factor " + factor + "): " + r.describe();
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

double total_of(const Json& type, const std::string& name, const char* side) {
  const Json* f = function_of(type, name);
  return f == nullptr ? 0 : (*f)["total"][side].get<double>();
}

TEST_F(SamplingDiff, NamesTheFunctionThatTookTwiceAsLongWithItsFactor) {
  RunResult r = profctl({"diff", base(), now(), "--format", "json", "--no-normalize"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const Json d = Json::parse(r.out);
  const Json* cpu = cpu_type(d);
  ASSERT_NE(cpu, nullptr) << r.out.substr(0, 2000);
  const Json* fifty = function_of(*cpu, "work_fifty");
  ASSERT_NE(fifty, nullptr);
  const double before = total_of(*cpu, "work_fifty", "base");
  const double after = total_of(*cpu, "work_fifty", "new");
  const double control_before =
      total_of(*cpu, "work_thirty", "base") + total_of(*cpu, "work_twenty", "base");
  const double control_after =
      total_of(*cpu, "work_thirty", "new") + total_of(*cpu, "work_twenty", "new");
  ASSERT_GT(before, 0);
  ASSERT_GT(control_before, 0);
  ASSERT_GT(control_after, 0);
  const double factor = (after / before) / (control_after / control_before);
  const std::string numbers = "work_fifty " + std::to_string(before / 1e6) + " ms -> " +
                              std::to_string(after / 1e6) + " ms, the others " +
                              std::to_string(control_before / 1e6) + " ms -> " +
                              std::to_string(control_after / 1e6) + " ms";
  std::printf("work_fifty: x%.3f against the unchanged functions (%s)\n", factor, numbers.c_str());
  EXPECT_GE(factor, kFactorLow) << numbers;
  EXPECT_LE(factor, kFactorHigh) << numbers;
  EXPECT_NEAR((*fifty)["total"]["change_percent"].get<double>(), 100 * (after / before - 1), 1e-6);
  // 50% -> 66.7% of the job: +16.7 points; work_thirty 30% -> 20%.
  const double pp = (*fifty)["total"]["change_pp"];
  EXPECT_GT(pp, 6) << numbers;
  EXPECT_LT(pp, 28) << numbers;
  EXPECT_LT((*function_of(*cpu, "work_thirty"))["total"]["change_pp"].get<double>(), -2);
  RunResult text = profctl({"diff", base(), now(), "--no-normalize", "--top", "1000"});
  ASSERT_EQ(text.exit_code, 0) << text.describe();
  EXPECT_NE(text.out.find("  work_fifty\n"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("unit < work_fifty < worker < start_thread < clone"), std::string::npos)
      << text.out;
}

TEST_F(SamplingDiff, TheGateTripsOnTheRegressionOnly) {
  RunResult r = profctl({"diff", base(), now(), "--fail-if", "cpu:work_fifty>+5pp", "--fail-if",
                         "cpu:work_thirty>+5pp"});
  EXPECT_EQ(r.exit_code, 5) << r.describe();
  EXPECT_NE(r.err.find("profctl: regression: cpu:work_fifty>+5pp: work_fifty total"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(r.err.find("work_thirty>"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("  FAIL  cpu:work_fifty>+5pp"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("  ok    cpu:work_thirty>+5pp"), std::string::npos) << r.out;
  RunResult pass = profctl({"diff", base(), now(), "--fail-if", "cpu:work_thirty>+5pp"});
  EXPECT_EQ(pass.exit_code, 0) << pass.describe();
}

TEST_F(SamplingDiff, ACaptureAgainstItselfIsNoRegression) {
  RunResult r =
      profctl({"diff", now(), now(), "--format", "json", "--fail-if", "cpu:work_fifty>+0%",
               "--fail-if", "cpu:total>0ns", "--fail-if", "cpu:self:unit>0pp"});
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
  EXPECT_NE(top->out.find("work_fifty"), std::string::npos) << top->out;
  // The base file holds the base as the diff scaled it.
  auto raw = pprof_raw(out.file("cpu.base.pb.gz"));
  ASSERT_TRUE(raw) << kNoGo;
  const Json d = Json::parse(*json);
  const double scaled_total = (*cpu_type(d))["total"]["base"];
  EXPECT_NEAR(static_cast<double>(pprof_raw_totals(raw->out)["cpu/nanoseconds"]), scaled_total,
              scaled_total * 1e-6 + 1000)
      << raw->out.substr(0, 500);
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
