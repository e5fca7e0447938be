// SPDX-License-Identifier: MIT
// The flame graph page: the merged tree it draws (values, order, inlined frames, folding of
// narrow boxes) and the page itself (self-contained, escaped, small for 50,000 stacks).
#include <gtest/gtest.h>

#include <sstream>

#include "report/flame_tree.h"
#include "report/flamegraph_writer.h"
#include "tests/unit/report_fixture.h"

namespace profctl {
namespace {

using testing::frame;
using testing::kApp;
using testing::rich_capture;

const FlameNode& child(const FlameTree& t, const FlameNode& n, const std::string& name) {
  for (size_t c : n.children) {
    if (t.nodes[c].name == name) {
      return t.nodes[c];
    }
  }
  ADD_FAILURE() << n.name << " has no child " << name;
  static const FlameNode none;
  return none;
}

TEST(ReportFlameTree, MergesStacksRootFirst) {
  const FlameTree t = build_flame_tree(rich_capture().profiles.at("cpu"), false);
  const FlameNode& root = t.nodes[0];
  EXPECT_EQ(root.name, "all");
  EXPECT_EQ(root.total, (std::vector<int64_t>{11, 111'111'110}));
  ASSERT_EQ(root.children.size(), 1u);
  const FlameNode& main = child(t, root, "main");
  EXPECT_EQ(main.total, root.total);
  EXPECT_EQ(main.file, "src/main.cpp");
  EXPECT_EQ(main.line, 12);
  EXPECT_EQ(main.last_line, 12);
  const FlameNode& run = child(t, main, "Worker::run()");
  // Every pc of Worker::run() is one node: burn's callers and the inlined helper's.
  EXPECT_EQ(run.total[0], 10);
  EXPECT_EQ(run.line, 42);  // the lines its samples were at: 42 and 45
  EXPECT_EQ(run.last_line, 45);
  const FlameNode& helper = child(t, run, "helper()");
  EXPECT_TRUE(helper.inlined);
  EXPECT_EQ(helper.total[1], 10'101'010);
  const FlameNode& burn = child(t, run, "burn()");
  EXPECT_EQ(burn.total[1], 90'909'090);
  EXPECT_EQ(flame_self(t, &burn - t.nodes.data(), 1), 50'505'050);  // less the vdso call
  EXPECT_EQ(child(t, main, "app+0x2000").total[0], 1);
}

TEST(ReportFlameTree, NarrowBoxesFoldIntoOtherAndTotalsStay) {
  Profile p;
  p.sample_types = {{"cpu", "nanoseconds"}};
  p.samples.push_back({{1000}, {frame(1, kApp, 1, "wide"), frame(2, kApp, 2, "main")}, {}});
  for (int i = 0; i < 10; ++i) {
    p.samples.push_back(
        {{1}, {frame(3, kApp, 3, "narrow" + std::to_string(i)), frame(2, kApp, 2, "main")}, {}});
  }
  const FlameTree full = build_flame_tree(p, false);
  const FlameTree pruned = prune_flame_tree(full, 0.005, 0);
  EXPECT_EQ(pruned.nodes[0].total[0], 1010);
  const FlameNode& main = child(pruned, pruned.nodes[0], "main");
  ASSERT_EQ(main.children.size(), 2u);
  EXPECT_EQ(pruned.nodes[main.children[0]].name, "wide");  // widest first
  const FlameNode& other = pruned.nodes[main.children[1]];
  EXPECT_TRUE(other.other);
  EXPECT_EQ(other.name, "[other]");
  EXPECT_EQ(other.total[0], 10);
  EXPECT_EQ(flame_self(pruned, 0, 0), 0);
}

TEST(ReportFlameTree, NegativeValuesDrawNothing) {
  Profile p;
  p.sample_types = {{"cpu", "nanoseconds"}};
  p.samples.push_back({{-5}, {frame(1, kApp, 1, "f")}, {}});
  p.samples.push_back({{7}, {frame(1, kApp, 1, "f")}, {}});
  EXPECT_EQ(build_flame_tree(p, false).nodes[0].total[0], 7);
}

std::string page(const Capture& c, const std::string& kind) {
  std::ostringstream out;
  write_flamegraph(c, kind, out);
  return out.str();
}

TEST(ReportFlamegraph, PageIsSelfContainedAndEscaped) {
  Capture c = rich_capture();
  c.profiles["cpu"].samples[0].frames[0].function = "evil</script><script>alert(1)</script>";
  const std::string html = page(c, "cpu");
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  for (const char* external : {"http://", "https://", "src=", "@import", "url("}) {
    EXPECT_EQ(html.find(external), std::string::npos) << external;
  }
  EXPECT_EQ(html.find("evil</script>"), std::string::npos);
  EXPECT_NE(html.find("evil\\u003c/script>"), std::string::npos);
  EXPECT_EQ(html.find("@@PROFCTL_DATA@@"), std::string::npos);
  EXPECT_NE(html.find("\"title\":\"profctl cpu profile\""), std::string::npos);
  // The heap page starts on its default type and can switch to the other three.
  const std::string heap = page(c, "heap");
  EXPECT_NE(heap.find("\"main\":3"), std::string::npos);
  EXPECT_NE(heap.find("{\"type\":\"alloc_space\",\"unit\":\"bytes\"}"), std::string::npos);
  EXPECT_NE(page(c, "wall").find("no wall profile"), std::string::npos);
}

// 50,000 distinct stacks 12 deep (5 branches per level below a few shared roots): the page
// stays a few MB, as the browser must parse and draw it in well under a second.
TEST(ReportFlamegraph, FiftyThousandStacksMakeASmallPage) {
  Capture c;
  c.target.exe = kApp;
  Profile cpu;
  cpu.sample_types = {{"samples", "count"}, {"cpu", "nanoseconds"}};
  std::vector<Frame> roots = {frame(1, kApp, 1, "main"), frame(2, kApp, 2, "_start")};
  for (int s = 0; s < 50'000; ++s) {
    std::vector<Frame> frames;
    int rest = s;
    for (int level = 0; level < 10; ++level, rest /= 3) {
      frames.push_back(
          frame(100 + level, kApp, 100,
                "ns::level" + std::to_string(level) + "_fn" + std::to_string(rest % 3)));
    }
    frames.push_back(frame(50, kApp, 50, "leaf_" + std::to_string(s)));
    std::reverse(frames.begin(), frames.end());
    frames.insert(frames.end(), roots.begin(), roots.end());
    cpu.samples.push_back({{1 + s % 7, 1'000'000 + 1000 * (s % 97)}, frames, {}});
  }
  c.profiles["cpu"] = cpu;
  const std::string html = page(c, "cpu");
  EXPECT_LT(html.size(), 4u << 20) << html.size();
  EXPECT_NE(html.find("[other]"), std::string::npos);
}

}  // namespace
}  // namespace profctl
