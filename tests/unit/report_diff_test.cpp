// SPDX-License-Identifier: MIT
// profctl diff's arithmetic: sums per function and stack, scaling to the new window, shares
// and percentage points, the order of the rows, and the base file for pprof -diff_base.
#include <gtest/gtest.h>

#include <sstream>

#include "report/diff_output.h"
#include "report/profile_diff.h"
#include "tests/unit/report_fixture.h"

namespace profctl {
namespace {

using testing::app_main;
using testing::burn;
using testing::frame;
using testing::kApp;
using testing::rich_capture;
using testing::worker_run;

Frame fn(const std::string& name) { return frame(0x1000 + name.size(), kApp, 0x10, name); }

// cpu samples (count, ns): f < main and g < main, over `seconds`.
Capture two_functions(int64_t f_ns, int64_t g_ns, double seconds) {
  Capture c;
  c.target.exe = kApp;
  c.window = {"2026-12-01T10:00:00Z", seconds};
  Profile cpu;
  cpu.sample_types = {{"samples", "count"}, {"cpu", "nanoseconds"}};
  cpu.samples = {{{1, f_ns}, {fn("f"), fn("main")}, {}}, {{1, g_ns}, {fn("g"), fn("main")}, {}}};
  c.profiles["cpu"] = cpu;
  return c;
}

const TypeDiff& cpu_ns(const CaptureDiff& d) { return d.kinds.at(0).types.at(d.kinds.at(0).main); }

const FunctionDiff& function(const TypeDiff& t, const std::string& name) {
  for (const FunctionDiff& f : t.functions) {
    if (f.name == name) {
      return f;
    }
  }
  ADD_FAILURE() << "no function " << name;
  static const FunctionDiff none;
  return none;
}

TEST(ReportDiff, DiffValueArithmetic) {
  DiffValue v = diff_value(100, 300, 2, 1000, 1500);
  EXPECT_DOUBLE_EQ(v.base, 200);
  EXPECT_DOUBLE_EQ(v.now, 300);
  EXPECT_DOUBLE_EQ(v.change(), 100);
  EXPECT_DOUBLE_EQ(*v.change_percent(), 50);
  EXPECT_DOUBLE_EQ(v.base_share, 10);  // shares of each capture's own, unscaled total
  EXPECT_DOUBLE_EQ(v.now_share, 20);
  EXPECT_DOUBLE_EQ(v.change_pp(), 10);
  EXPECT_FALSE(diff_value(0, 5, 1, 10, 10).change_percent());
  EXPECT_DOUBLE_EQ(*diff_value(0, 0, 1, 10, 10).change_percent(), 0);
  EXPECT_DOUBLE_EQ(diff_value(1, 1, 1, 0, 0).base_share, 0);
}

TEST(ReportDiff, NormalisesByTheWindows) {
  // 1 s then 2 s: f doubles its rate (100 -> 400 in twice the time), g keeps it.
  const CaptureDiff d = diff_captures(two_functions(100, 900, 1), two_functions(400, 1800, 2), {});
  EXPECT_TRUE(d.normalized);
  const TypeDiff& t = cpu_ns(d);
  EXPECT_EQ(t.type.type, "cpu");
  EXPECT_DOUBLE_EQ(t.scale, 2);
  EXPECT_DOUBLE_EQ(t.total.base, 2000);
  EXPECT_DOUBLE_EQ(t.total.now, 2200);
  const FunctionDiff& f = function(t, "f");
  EXPECT_DOUBLE_EQ(f.total.base, 200);
  EXPECT_DOUBLE_EQ(f.total.now, 400);
  EXPECT_DOUBLE_EQ(*f.total.change_percent(), 100);
  EXPECT_DOUBLE_EQ(f.self.change(), 200);
  EXPECT_NEAR(f.total.change_pp(), 400.0 / 2200 * 100 - 10, 1e-9);
  EXPECT_DOUBLE_EQ(*function(t, "g").total.change_percent(), 0);
  EXPECT_DOUBLE_EQ(function(t, "main").self.now, 0);
  EXPECT_DOUBLE_EQ(function(t, "main").total.change(), 200);
  // Largest regressions first: main and f (+200 each, by name), then g.
  ASSERT_EQ(t.functions.size(), 3u);
  EXPECT_EQ(t.functions[0].name, "f");
  EXPECT_EQ(t.functions[1].name, "main");
  EXPECT_EQ(t.functions[2].name, "g");
  ASSERT_EQ(t.stacks.size(), 2u);
  EXPECT_EQ(t.stacks[0].frames, (std::vector<std::string>{"main", "f"}));
  EXPECT_DOUBLE_EQ(t.stacks[0].value.change(), 200);
}

TEST(ReportDiff, WithoutNormalisingComparesRawTotals) {
  const CaptureDiff d =
      diff_captures(two_functions(100, 900, 1), two_functions(400, 1800, 2), {false, false});
  EXPECT_FALSE(d.normalized);
  const TypeDiff& t = cpu_ns(d);
  EXPECT_DOUBLE_EQ(t.scale, 1);
  EXPECT_DOUBLE_EQ(*function(t, "f").total.change_percent(), 300);
  EXPECT_DOUBLE_EQ(*function(t, "g").total.change_percent(), 100);
}

TEST(ReportDiff, ACaptureAgainstItselfChangesNothing) {
  const Capture c = rich_capture();
  const CaptureDiff d = diff_captures(c, c, {});
  EXPECT_FALSE(d.normalized);
  ASSERT_EQ(d.kinds.size(), 2u);
  for (const KindDiff& k : d.kinds) {
    for (const TypeDiff& t : k.types) {
      EXPECT_EQ(t.total.change(), 0);
      for (const FunctionDiff& f : t.functions) {
        EXPECT_EQ(f.total.change(), 0) << k.kind << " " << f.name;
        EXPECT_EQ(f.self.change(), 0) << k.kind << " " << f.name;
        EXPECT_EQ(f.total.change_pp(), 0);
      }
      for (const StackDiff& s : t.stacks) {
        EXPECT_EQ(s.value.change(), 0);
      }
    }
  }
  std::ostringstream text;
  write_diff_text(d, {"a.json", &c}, {"a.json", &c}, {}, 10, text);
  EXPECT_NE(text.str().find("no function changed"), std::string::npos) << text.str();
}

TEST(ReportDiff, InUseMemoryIsNotScaledByTheWindow) {
  Capture base = rich_capture();
  Capture now = rich_capture();
  now.window.duration_s = base.window.duration_s * 3;
  const CaptureDiff d = diff_captures(base, now, {});
  const KindDiff* heap = nullptr;
  for (const KindDiff& k : d.kinds) {
    heap = k.kind == "heap" ? &k : heap;
  }
  ASSERT_NE(heap, nullptr);
  EXPECT_EQ(heap->types[heap->main].type.type, "inuse_space");
  for (const TypeDiff& t : heap->types) {
    EXPECT_DOUBLE_EQ(t.scale, t.type.type.rfind("inuse_", 0) == 0 ? 1.0 : 3.0) << t.type.type;
  }
  EXPECT_EQ(heap->types[heap->main].total.change(), 0);
  EXPECT_TRUE(is_gauge("threads", {"threads", "count"}));
  EXPECT_FALSE(is_gauge("wall", {"wall", "nanoseconds"}));
  // --sample-index picks the main type as the text's.
  const CaptureDiff alloc = diff_captures(base, now, {}, "alloc_space");
  for (const KindDiff& k : alloc.kinds) {
    if (k.kind == "heap") {
      EXPECT_EQ(k.types[k.main].type.type, "alloc_space");
    }
  }
}

TEST(ReportDiff, RecursionCountsOncePerStackInTheTotal) {
  Capture base = two_functions(100, 900, 1);
  base.profiles["cpu"].samples[0].frames = {fn("f"), fn("f"), fn("f"), fn("main")};
  const CaptureDiff d = diff_captures(base, base, {});
  EXPECT_DOUBLE_EQ(function(cpu_ns(d), "f").total.now, 100);
  EXPECT_DOUBLE_EQ(function(cpu_ns(d), "f").self.now, 100);
  EXPECT_DOUBLE_EQ(function(cpu_ns(d), "main").total.now, 1000);
}

TEST(ReportDiff, KindsInOnlyOneCaptureAreListed) {
  Capture base = rich_capture();
  Capture now = rich_capture();
  base.profiles.erase("heap");
  now.profiles["wall"] = now.profiles["cpu"];
  const CaptureDiff d = diff_captures(base, now, {});
  ASSERT_EQ(d.kinds.size(), 1u);
  EXPECT_EQ(d.kinds[0].kind, "cpu");
  EXPECT_EQ(d.only_in_base, std::vector<std::string>{});
  EXPECT_EQ(d.only_in_now, (std::vector<std::string>{"heap", "wall"}));
}

TEST(ReportDiff, ScaledBaseIsWhatPprofDiffBaseNeeds) {
  Capture base = two_functions(100, 901, 1);
  const Capture now = two_functions(400, 1800, 2.5);
  const Capture scaled = scaled_base(base, now, true);
  EXPECT_DOUBLE_EQ(scaled.window.duration_s, 2.5);
  const auto& samples = scaled.profiles.at("cpu").samples;
  EXPECT_EQ(samples[0].values, (std::vector<int64_t>{3, 250}));  // 2.5 rounds to 3
  EXPECT_EQ(samples[1].values, (std::vector<int64_t>{3, 2253}));
  EXPECT_EQ(scaled_base(base, now, false), base);
}

TEST(ReportDiff, TextLeadsWithTheLargestRegression) {
  const Capture base = two_functions(100, 900, 1);
  const Capture now = two_functions(400, 1800, 2);
  const CaptureDiff d = diff_captures(base, now, {});
  std::ostringstream text;
  write_diff_text(d, {"base.json", &base}, {"new.json", &now}, {}, 10, text);
  const std::string s = text.str();
  EXPECT_NE(s.find("base values scaled by 2.0000"), std::string::npos) << s;
  EXPECT_NE(s.find("cpu: samples 4 -> 2 (-50.00%); cpu 2.00us -> 2.20us (+10.00%)"),
            std::string::npos)
      << s;
  const size_t regressions = s.find("largest regressions first:");
  ASSERT_NE(regressions, std::string::npos) << s;
  const size_t first_row = s.find('\n', s.find('\n', regressions) + 1) + 1;
  EXPECT_EQ(s.substr(first_row, s.find('\n', first_row) - first_row),
            "       200ns       400ns       +200ns  +100.00%    +8.18       +200ns  f")
      << s;
  EXPECT_NE(s.find("+200ns (+100.00%, +8.18pp)  f < main"), std::string::npos) << s;
}

}  // namespace
}  // namespace profctl
