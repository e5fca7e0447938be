// SPDX-License-Identifier: MIT
// From HeapTracker to every output: cli's add_heap_profile (compiled into this binary) turns
// the tracker's result into the Capture's heap profile, symbolized offline against the symfix
// fixture; the JSON round-trips and validates, the text and pprof carry the same numbers.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "capture/capture_assembly.h"
#include "profile/heap_profile.h"
#include "report/heap_text.h"
#include "report/json_reader.h"
#include "report/json_writer.h"
#include "tests/unit/report_fixture.h"
#include "tests/unit/symfix_util.h"

namespace profctl {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kSec = 1'000'000'000;

class HeapAssembly : public ::testing::Test {
 protected:
  void SetUp() override {
    auto t = TargetDwfl::for_files({SYMFIX_PATH});
    ASSERT_TRUE(t.ok()) << t.error().message();
    dwfl_ = std::move(t).value();
    method_ = testing::find_symbol(dwfl_->get(), "symfix", "_ZN2ns5Klass6methodEi");
    chain_a_ = testing::find_symbol(dwfl_->get(), "symfix", "chain_a");
    chain_b_ = testing::find_symbol(dwfl_->get(), "symfix", "chain_b");
    ASSERT_TRUE(method_ && chain_a_ && chain_b_);
  }

  // A return address inside `s` (not its first byte: callers' pcs follow a call).
  static UnwoundFrame in(const testing::SymbolAt& s) { return {s.addr + 1, false}; }

  std::unique_ptr<TargetDwfl> dwfl_;
  std::optional<testing::SymbolAt> method_, chain_a_, chain_b_;
};

TEST_F(HeapAssembly, TrackerToCaptureToEveryWriter) {
  StackTable stacks;
  const std::vector<UnwoundFrame> in_method = {in(*method_), in(*chain_a_)};
  const std::vector<UnwoundFrame> in_chain_b = {in(*chain_b_), in(*chain_a_)};
  const StackId a = stacks.intern(in_method);
  const StackId b = stacks.intern(in_chain_b);

  HeapTracker t(1);
  t.set_start(0);
  t.on_alloc(0x1000, 4096, a, 1 * kSec, 11);  // long-lived
  t.on_alloc(0x2000, 100, b, 2 * kSec, 12);
  t.on_alloc(0x3000, 100, b, 3 * kSec, 12);  // peak: 4296 bytes at +3s
  t.on_free(0x2000, 4 * kSec);
  t.on_free(0x9999, 5 * kSec);               // unknown
  t.on_alloc(0x4000, 50, b, 19 * kSec, 13);  // too young at the end

  Capture c;
  c.target = {1, SYMFIX_PATH, {}};
  {
    Symbolizer sym(*dwfl_, {});
    add_heap_profile(c, t.result(20 * kSec, 10 * kSec), stacks,
                     [&sym](uint32_t) -> Symbolizer& { return sym; });
  }
  ASSERT_EQ(c.profiles.count("heap"), 1u);
  const Profile& p = c.profiles.at("heap");
  ASSERT_EQ(p.sample_types.size(), 4u);
  EXPECT_EQ(p.sample_types[1].type, "alloc_space");
  EXPECT_EQ(p.default_sample_type, "inuse_space");
  EXPECT_EQ(p.period_type, (SampleType{"space", "bytes"}));
  EXPECT_EQ(p.period, 1);
  ASSERT_EQ(p.samples.size(), 2u);
  EXPECT_EQ(p.samples[0].values, (std::vector<int64_t>{1, 4096, 1, 4096}));
  EXPECT_EQ(p.samples[1].values, (std::vector<int64_t>{3, 250, 2, 150}));
  EXPECT_EQ(p.samples[1].raw_values, p.samples[1].values);  // rate 1: nothing to scale
  ASSERT_GE(p.samples[0].frames.size(), 2u);
  EXPECT_EQ(p.samples[0].frames[0].function, "ns::Klass::method(int)");
  EXPECT_EQ(p.samples[0].frames.back().function, "chain_a");

  ASSERT_TRUE(p.heap);
  const CaptureHeap& h = *p.heap;
  EXPECT_EQ(h.counters.at("sampled_allocs"), 4u);
  EXPECT_EQ(h.counters.at("sampled_frees"), 1u);
  EXPECT_EQ(h.counters.at("unknown_frees"), 1u);
  EXPECT_EQ(h.counters.at("live_at_end"), 3u);
  EXPECT_EQ(h.peak_at_ns, 3 * kSec);
  EXPECT_EQ(h.peak.bytes, 4296);
  ASSERT_EQ(h.peak.stacks.size(), 2u);
  EXPECT_EQ(h.peak.stacks[0].frames[0].function, "ns::Klass::method(int)");
  EXPECT_FALSE(h.peak.stacks[0].oldest_age_ns);
  EXPECT_EQ(h.leak_min_age_ns, 10 * kSec);
  ASSERT_EQ(h.leaks.stacks.size(), 2u);  // 0x1000 (19 s old) and 0x3000 (17 s old)
  EXPECT_EQ(h.leaks.stacks[0].bytes, 4096);
  EXPECT_EQ(h.leaks.stacks[0].oldest_age_ns, 19 * kSec);
  EXPECT_EQ(h.leaks.stacks[0].oldest_tid, 11);
  EXPECT_EQ(h.leaks.stacks[1].raw_objects, 1);
  EXPECT_EQ(h.leaks.stacks[1].oldest_tid, 12);

  // capture.json: round trip, and the schema.
  std::ostringstream json;
  write_capture_json(c, json);
  std::istringstream in_json(json.str());
  Result<Capture> back = read_capture_json(in_json);
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->profiles.at("heap"), p);
  const fs::path dir = fs::temp_directory_path() / ("profctl-heapasm-" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "capture.json") << json.str();
  const fs::path root = testing::repo_root();
  const std::string cmd = "/usr/bin/python3 '" + (root / "tests/tools/validate_json.py").string() +
                          "' '" + (root / "schema/profctl.capture-1.schema.json").string() + "' '" +
                          (dir / "capture.json").string() + "'";
  const int status = std::system(cmd.c_str());
  fs::remove_all(dir);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);

  // heap.txt: Go's header with the same numbers.
  std::ostringstream text;
  write_heap_text(c, text, {});
  EXPECT_EQ(text.str().rfind("heap profile: 3: 4246 [4: 4346] @ heap/2\n", 0), 0u) << text.str();
  EXPECT_NE(text.str().find("# peak in use: 4.20KiB, 3 objects (sampled 3: 4.20KiB) at +3.00s"),
            std::string::npos)
      << text.str();
}

}  // namespace
}  // namespace profctl
