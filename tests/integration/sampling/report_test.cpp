// SPDX-License-Identifier: MIT
// `profctl report`: re-rendering a saved capture.json gives back what the capture wrote, and a bad
// file is one line on stderr and exit 1, never a crash. Target: sampling_sleep_spin.c.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>

#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

namespace fs = std::filesystem;

// One 1 s capture of sampling_sleep_spin with every sampled profile, shared by the tests here.
class SamplingReport : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!why_cannot_run().empty()) {
      return;
    }
    dir_ = new TempDir();
    Child target({SAMPLING_SLEEP_SPIN});
    if (!target.wait_ready()) {
      setup_error_ = "sampling_sleep_spin did not say ready";
      return;
    }
    RunResult r = profctl({"attach", std::to_string(target.pid()), "-d", "1s", "--profiles",
                           "cpu,wall,threadcreate,threads", "-o", dir_->path()});
    if (r.exit_code != 0) {
      setup_error_ = "profctl attach: " + r.describe();
    }
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    PROFCTL_REQUIRE_PROFCTL();
    ASSERT_TRUE(setup_error_.empty()) << setup_error_;
  }
  static std::string capture_path() { return dir_->file("capture.json"); }

  static TempDir* dir_;
  static std::string setup_error_;
};
TempDir* SamplingReport::dir_ = nullptr;
std::string SamplingReport::setup_error_;

TEST_F(SamplingReport, ProfileTextIsTheSameAsTheCapturesOwnTextFile) {
  auto capture = load_capture(dir_->path());
  ASSERT_TRUE(capture);
  for (const char* kind : {"cpu", "wall", "threadcreate", "threads"}) {
    SCOPED_TRACE(kind);
    ASSERT_NE(profile_of(*capture, kind), nullptr);
    auto written = read_text(dir_->file(std::string(kind) + ".txt"));
    ASSERT_TRUE(written) << kind << ".txt missing";
    // The capture wrote its .txt files with the default --top (10); say it explicitly here too.
    RunResult r = profctl({"report", capture_path(), "--profile", kind, "--top", "10"});
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_EQ(r.out, *written) << "`profctl report " << capture_path() << " --profile " << kind
                               << " --top 10` differs from " << kind << ".txt";
  }
}

TEST_F(SamplingReport, ReRenderingToADirectoryGivesTheSameFiles) {
  TempDir again;
  RunResult r = profctl({"report", capture_path(), "--format", "all", "-o", again.path()});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  for (const auto& entry : fs::directory_iterator(dir_->path())) {
    const std::string name = entry.path().filename().string();
    SCOPED_TRACE(name);
    auto original = read_text(entry.path().string());
    auto rendered = read_text(again.file(name));
    ASSERT_TRUE(rendered) << "report -o did not write " << name;
    if (name == "capture.json") {
      EXPECT_EQ(Json::parse(*rendered), Json::parse(*original))
          << "capture.json re-rendered by report is not the same document";
    } else if (name.size() > 6 && name.substr(name.size() - 6) == ".pb.gz") {
      continue;  // gzip headers carry no time, but compare what pprof reads: below
    } else {
      EXPECT_EQ(*rendered, *original) << name << " differs after report -o";
    }
  }
  EXPECT_TRUE(outputs_valid(again.path()));
}

TEST_F(SamplingReport, EveryOutputIsValidAndPprofAgreesWithTheJson) {
  EXPECT_TRUE(outputs_valid(dir_->path(), {{"wall", {"sleeper_loop", "spin_loop"}},
                                           {"threads", {"sleeper_loop", "spin_loop"}}}));
}

struct BadFile {
  const char* name;
  std::string (*make)(const std::string& good);
};

void PrintTo(const BadFile& b, std::ostream* os) { *os << b.name; }

std::string half(const std::string& good) { return good.substr(0, good.size() / 2); }
std::string newer_schema(const std::string& good) {
  Json doc = Json::parse(good);
  doc["schema"] = "profctl.capture/2";
  return doc.dump();
}

class SamplingReportRejects : public SamplingReport,
                              public ::testing::WithParamInterface<BadFile> {};

TEST_P(SamplingReportRejects, WithExit1AndOneLineOnStderr) {
  auto good = read_text(capture_path());
  ASSERT_TRUE(good);
  TempDir tmp;
  const std::string path = tmp.file("bad.json");
  ASSERT_TRUE(write_text(path, GetParam().make(*good)));
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{}, std::vector<std::string>{"--profile", "cpu"}}) {
    std::vector<std::string> args = {"report", path};
    args.insert(args.end(), extra.begin(), extra.end());
    RunResult r = profctl(args);
    SCOPED_TRACE("profctl report bad.json (" + std::string(GetParam().name) + ")");
    EXPECT_FALSE(r.timed_out) << r.describe();
    EXPECT_EQ(r.term_signal, 0) << "crashed: " << r.describe();
    EXPECT_EQ(r.exit_code, 1) << r.describe();
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "stderr: [" << r.err << "]";
    EXPECT_FALSE(r.err.empty() || r.err.back() != '\n') << "stderr: [" << r.err << "]";
    EXPECT_EQ(r.out, "") << "stdout of a rejected file";
  }
}

INSTANTIATE_TEST_SUITE_P(
    BadFiles, SamplingReportRejects,
    ::testing::Values(BadFile{"Empty", [](const std::string&) { return std::string(); }},
                      BadFile{"Truncated", half}, BadFile{"NewerSchema", newer_schema},
                      BadFile{"NotJson",
                              [](const std::string&) {
                                return std::string(
                                    "\x7f"
                                    "ELF\x02\x01 not json {{{",
                                    20);
                              }},
                      BadFile{"EmptyObject", [](const std::string&) { return std::string("{}"); }},
                      BadFile{"SchemaOnly",
                              [](const std::string&) {
                                return std::string(R"({"schema":"profctl.capture/1"})");
                              }}),
    [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace profctl::testing::sampling
