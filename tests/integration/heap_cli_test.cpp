// SPDX-License-Identifier: MIT
// The heap profile's command line: --mem-rate, --leak-age and --sample-index are validated
// before anything is attached (exit 1, one line naming the valid forms), and `profctl report`
// re-renders a saved heap profile with --sample-index. No target, no ptrace.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "support/capture.h"

namespace profctl::testing {
namespace {

namespace fs = std::filesystem;

#define REQUIRE_PROFCTL_BINARY()              \
  do {                                        \
    if (profctl_path().empty()) {             \
      GTEST_SKIP() << "profctl is not built"; \
    }                                         \
  } while (0)

void expect_usage_error(const RunResult& r, const std::string& text) {
  EXPECT_EQ(r.exit_code, 1) << r.describe();
  EXPECT_TRUE(r.out.empty()) << r.describe();
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "not one line: " << r.describe();
  EXPECT_NE(r.err.find(text), std::string::npos) << r.describe();
}

TEST(HeapCli, BadMemRateIsAUsageError) {
  REQUIRE_PROFCTL_BINARY();
  for (const char* v : {"0", "12Q", "", "1.5.1", "1.5K"}) {
    SCOPED_TRACE(v);
    // pid 1 would need privileges: the error must come before any attach is tried.
    expect_usage_error(profctl({"attach", "1", "--mem-rate", v}), "bad --mem-rate");
  }
}

TEST(HeapCli, BadLeakAgeIsAUsageError) {
  REQUIRE_PROFCTL_BINARY();
  for (const char* v : {"0", "soon", "-1s", "10y"}) {
    SCOPED_TRACE(v);
    expect_usage_error(profctl({"attach", "1", "--leak-age", v}), "bad --leak-age");
  }
}

TEST(HeapCli, BadSampleIndexListsTheValidNames) {
  REQUIRE_PROFCTL_BINARY();
  const RunResult r = profctl({"attach", "1", "--sample-index", "cpu"});
  expect_usage_error(r, "unknown --sample-index 'cpu'");
  EXPECT_NE(r.err.find("alloc_objects, alloc_space, inuse_objects, inuse_space"), std::string::npos)
      << r.describe();
  expect_usage_error(profctl({"report", "/nonexistent.json", "--sample-index", "inuse"}),
                     "unknown --sample-index 'inuse'");
}

TEST(HeapCli, ValidValuesAreRecordedInTheCapture) {
  PROFCTL_REQUIRE_PROFCTL();  // runs /bin/true under profctl
  const fs::path dir =
      fs::temp_directory_path() / ("profctl-heap-opts-" + std::to_string(getpid()));
  struct Case {
    const char* mem_rate;
    const char* bytes;
  };
  for (const Case& c : {Case{"1", "1"}, Case{"4096", "4096"}, Case{"64K", "65536"},
                        Case{"2KiB", "2048"}, Case{"1M", "1048576"}}) {
    SCOPED_TRACE(c.mem_rate);
    const RunResult r = profctl({"run", "-o", dir.string(), "--format", "json", "--profiles",
                                 "cpu,heap", "--mem-rate", c.mem_rate, "--leak-age", "500ms",
                                 "--sample-index", "alloc_space", "--", "/bin/true"});
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    std::ifstream in(dir / "capture.json");
    const Json j = Json::parse(in);
    EXPECT_EQ(j["options"]["mem_rate"], c.bytes);
    EXPECT_EQ(j["options"]["leak_age_ns"], "500000000");
  }
  fs::remove_all(dir);
}

// A heap profile as profctl writes it (period 1024; scaled values are Go's scaleHeapSample of
// the raw ones).
constexpr const char* kHeapCapture = R"({
  "schema": "profctl.capture/1",
  "target": {"pid": 42, "exe": "/usr/bin/app", "cmdline": ["app"]},
  "window": {"start": "2026-11-24T10:00:00Z", "duration_s": 30.0},
  "threads": [],
  "modules": [{"path": "/usr/bin/app", "start": "0x55d0c0a00000", "limit": "0x55d0c0a40000",
               "file_offset": "0x0", "build_id": ""}],
  "profiles": {"heap": {
    "sample_types": [{"type": "alloc_objects", "unit": "count"},
                     {"type": "alloc_space", "unit": "bytes"},
                     {"type": "inuse_objects", "unit": "count"},
                     {"type": "inuse_space", "unit": "bytes"}],
    "default_sample_type": "inuse_space",
    "period_type": {"type": "space", "unit": "bytes"}, "period": 1024,
    "samples": [
      {"values": [32, 3224, 21, 2149], "raw_values": [3, 300, 2, 200],
       "frames": [{"pc": "0x55d0c0a01234", "function": "run", "module": "/usr/bin/app",
                   "offset": "0x1234", "file": "w.cpp", "line": 42, "inlined": false},
                  {"pc": "0x55d0c0a00f00", "function": "main", "module": "/usr/bin/app",
                   "offset": "0xf00", "file": "m.cpp", "line": 12, "inlined": false}]},
      {"values": [21, 2149, 0, 0], "raw_values": [2, 200, 0, 0],
       "frames": [{"pc": "0x55d0c0a01100", "function": "burn", "module": "/usr/bin/app",
                   "offset": "0x1100", "file": "b.cpp", "line": 7, "inlined": false},
                  {"pc": "0x55d0c0a00f00", "function": "main", "module": "/usr/bin/app",
                   "offset": "0xf00", "file": "m.cpp", "line": 12, "inlined": false}]}],
    "counters": {"sampled_allocs": 5, "sampled_frees": 3, "unknown_frees": 2,
                 "missed_frees": 0, "live_at_end": 2, "ring_dropped": 0, "table_dropped": 0},
    "peak": {"at_ns": 1500000000, "objects": 21, "bytes": 2149, "raw_objects": 2,
             "raw_bytes": 200, "stacks": []},
    "leaks": {"min_age_ns": 10000000000, "objects": 0, "bytes": 0, "raw_objects": 0,
              "raw_bytes": 0, "stacks": []}}}
})";

class HeapReport : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("profctl-heap-cli-" + std::to_string(getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "capture.json") << kHeapCapture;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  fs::path dir_;
};

TEST_F(HeapReport, FoldedFollowsTheSampleIndex) {
  REQUIRE_PROFCTL_BINARY();
  ASSERT_TRUE(schema_valid(kHeapCapture));
  struct Case {
    const char* index;
    const char* folded;
  };
  for (const Case& c : {Case{nullptr, "main;burn 0\nmain;run 2149\n"},
                        Case{"inuse_objects", "main;burn 0\nmain;run 21\n"},
                        Case{"alloc_space", "main;burn 2149\nmain;run 3224\n"},
                        Case{"alloc_objects", "main;burn 21\nmain;run 32\n"}}) {
    SCOPED_TRACE(c.index ? c.index : "default");
    const fs::path out = dir_ / (c.index ? c.index : "default");
    std::vector<std::string> args = {
        "report", (dir_ / "capture.json").string(), "-o", out.string(), "--format", "all"};
    if (c.index) {
      args.insert(args.end(), {"--sample-index", c.index});
    }
    const RunResult r = profctl(args);
    ASSERT_EQ(r.exit_code, 0) << r.describe();
    EXPECT_EQ(read(out / "heap.folded"), c.folded);
    const std::string text = read(out / "heap.txt");
    EXPECT_EQ(text.rfind("heap profile: 2: 200 [5: 500] @ heap/2048\n", 0), 0u) << text;
    EXPECT_NE(
        text.find(std::string("# top 2 of 2 stacks by ") + (c.index ? c.index : "inuse_space")),
        std::string::npos)
        << text;
    // capture.json written back keeps every heap field.
    const Json back = Json::parse(read(out / "capture.json"))["profiles"]["heap"];
    const Json orig = Json::parse(kHeapCapture)["profiles"]["heap"];
    for (const char* k :
         {"sample_types", "default_sample_type", "period", "counters", "peak", "leaks"}) {
      EXPECT_EQ(back[k], orig[k]) << k;
    }
    EXPECT_EQ(back["samples"][0]["raw_values"], orig["samples"][0]["raw_values"]);
    EXPECT_TRUE(fs::exists(out / "heap.pb.gz"));
  }
}

TEST_F(HeapReport, TextOnStdoutRanksByTheSampleIndex) {
  REQUIRE_PROFCTL_BINARY();
  const RunResult r =
      profctl({"report", (dir_ / "capture.json").string(), "--sample-index", "alloc_objects"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  const size_t top = r.out.find("# top 2 of 2 stacks by alloc_objects:");
  ASSERT_NE(top, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("#   #1  alloc_objects 32 (60.38%)", top), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2 frees of pointers profctl did not know (allocated before the attach"),
            std::string::npos)
      << r.out;
}

}  // namespace
}  // namespace profctl::testing
