// SPDX-License-Identifier: MIT
// The flame graph page as a person sees it: opened in headless Chromium (Debian's chromium;
// skipped where it is not installed), its DOM after the scripts ran must show the profile's
// total, the widest box under the root with the text report's name and share, and a search
// (from the URL, #search=...) that highlights the function and sums it as the text's cum%.
// A page of 50,000 distinct stacks must draw in under a second. Target: sampling_truth work.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "report/capture.h"
#include "report/flamegraph_writer.h"
#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

namespace fs = std::filesystem;

constexpr const char* kChromium = "/usr/bin/chromium";

// The DOM of `url` once its scripts ran, from a fresh profile directory.
RunResult dump_dom(const std::string& url) {
  TempDir profile;
  RunOptions o;
  o.timeout = milliseconds(90000);
  return run({kChromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
              "--user-data-dir=" + profile.path(), "--window-size=1400,900", "--dump-dom", url},
             o);
}

std::string unescape(std::string s) {
  for (const auto& [from, to] :
       {std::pair{"&lt;", "<"}, std::pair{"&gt;", ">"}, std::pair{"&quot;", "\""},
        std::pair{"&#39;", "'"}, std::pair{"&amp;", "&"}}) {
    for (size_t at = 0; (at = s.find(from, at)) != std::string::npos; at += std::strlen(to)) {
      s.replace(at, std::strlen(from), to);
    }
  }
  return s;
}

struct Box {
  std::string cls;
  int id = 0;
  std::string name;
  long long total = 0;
  std::string share;
  int top = 0;
};

std::vector<Box> boxes_of(const std::string& dom) {
  static const std::regex re(
      R"re(<div class="([^"]*)" data-i="(\d+)" data-name="([^"]*)" data-total="(-?\d+)" data-self="(-?\d+)" data-share="([^"]*)" style="left:[\d.]+%;width:[\d.]+%;top:(\d+)px)re");
  std::vector<Box> out;
  for (auto it = std::sregex_iterator(dom.begin(), dom.end(), re); it != std::sregex_iterator();
       ++it) {
    const auto& m = *it;
    out.push_back({m[1], std::stoi(m[2]), unescape(m[3]), std::stoll(m[4]), m[6], std::stoi(m[7])});
  }
  return out;
}

// The text report's top-functions table: name -> cum%.
// A percentage column of the text report's function table (flat% at 12, cum% at 40), by
// function.
std::map<std::string, std::string> percent_column(const std::string& text, size_t column) {
  std::map<std::string, std::string> out;
  const size_t header = text.find("cum%  function\n");
  if (header == std::string::npos) {
    return out;
  }
  std::istringstream rows(text.substr(text.find('\n', header) + 1));
  std::string row;
  while (std::getline(rows, row) && row.size() > 50) {
    std::string pct = row.substr(column, 8);
    pct.erase(0, pct.find_first_not_of(' '));
    out[row.substr(50)] = pct;
  }
  return out;
}

std::map<std::string, std::string> cum_percent(const std::string& text) {
  return percent_column(text, 40);
}

std::string attribute_text(const std::string& dom, const std::string& id) {
  static const std::regex tag_end(">([^<]*)<");
  const size_t at = dom.find("id=\"" + id + "\"");
  if (at == std::string::npos) {
    return "";
  }
  std::smatch m;
  const std::string rest = dom.substr(at);
  return std::regex_search(rest, m, tag_end) ? unescape(m[1]) : "";
}

std::string data_attribute(const std::string& dom, const std::string& id, const std::string& name) {
  const size_t at = dom.find("id=\"" + id + "\"");
  if (at == std::string::npos) {
    return "";
  }
  const size_t end = dom.find('>', at);
  const std::string tag = dom.substr(at, end - at);
  const size_t a = tag.find(name + "=\"");
  if (a == std::string::npos) {
    return "";
  }
  const size_t v = a + name.size() + 2;
  return tag.substr(v, tag.find('"', v) - v);
}

#define REQUIRE_CHROMIUM()                                                            \
  do {                                                                                \
    if (::access(kChromium, X_OK) != 0) {                                             \
      GTEST_SKIP() << kChromium << " is not installed (Debian package chromium; "     \
                   << "scripts/install-deps.sh installs it): the page is not opened"; \
    }                                                                                 \
  } while (0)

class SamplingFlamegraph : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!why_cannot_run().empty()) {
      return;
    }
    dir_ = new TempDir();
    Child target({SAMPLING_TRUTH, "work"});
    if (!target.wait_ready()) {
      setup_error_ = "sampling_truth did not say ready";
      return;
    }
    RunResult r = profctl({"attach", std::to_string(target.pid()), "-d", "2s", "--profiles", "cpu",
                           "-o", dir_->path()});
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

  static TempDir* dir_;
  static std::string setup_error_;
};
TempDir* SamplingFlamegraph::dir_ = nullptr;
std::string SamplingFlamegraph::setup_error_;

TEST_F(SamplingFlamegraph, ReportRendersTheSamePageAsTheCapture) {
  auto written = read_text(dir_->file("cpu.html"));
  ASSERT_TRUE(written) << "attach -o (--format all) wrote no cpu.html";
  RunResult r = profctl({"report", dir_->file("capture.json"), "--format", "flamegraph"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_EQ(r.out, *written);
  for (const char* external : {"http://", "https://", "src="}) {
    EXPECT_EQ(written->find(external), std::string::npos) << external;
  }
}

TEST_F(SamplingFlamegraph, ChromiumShowsTheTextReportsTotalAndWidestBox) {
  REQUIRE_CHROMIUM();
  RunResult text = profctl({"report", dir_->file("capture.json"), "--top", "100000"});
  ASSERT_EQ(text.exit_code, 0) << text.describe();
  RunResult dom = dump_dom("file://" + dir_->file("cpu.html"));
  ASSERT_EQ(dom.exit_code, 0) << dom.describe();
  const std::vector<Box> boxes = boxes_of(dom.out);
  ASSERT_GT(boxes.size(), 3u) << dom.out.substr(0, 3000);
  const Box* root = nullptr;
  const Box* widest = nullptr;
  for (const Box& b : boxes) {
    root = b.id == 0 ? &b : root;
    if (b.top == 18 && (widest == nullptr || b.total > widest->total)) {
      widest = &b;
    }
  }
  ASSERT_NE(root, nullptr);
  ASSERT_NE(widest, nullptr);
  EXPECT_EQ(root->name, "all");
  EXPECT_EQ(root->share, "100.00%");
  // The total: the sum of the capture's cpu values, printed as the text report prints it.
  auto capture = load_capture(dir_->path());
  ASSERT_TRUE(capture);
  const Json* cpu = profile_of(*capture, "cpu");
  ASSERT_NE(cpu, nullptr);
  EXPECT_EQ(root->total, sum_values(*cpu, value_index(*cpu, "cpu")));
  const std::string shown = attribute_text(dom.out, "total");  // "total: cpu 1.00s"
  ASSERT_EQ(shown.rfind("total: cpu ", 0), 0u) << shown;
  const std::string total_line = text.out.substr(text.out.find("\ntotal:") + 1);
  EXPECT_NE(total_line.substr(0, total_line.find('\n')).find(shown.substr(7) + " ("),
            std::string::npos)
      << "page: " << shown << "\ntext: " << total_line.substr(0, total_line.find('\n'));
  // The widest box under the root: the outermost function, with the text's cum%.
  const auto cum = cum_percent(text.out);
  ASSERT_TRUE(cum.count(widest->name)) << widest->name << " not in the text report\n" << text.out;
  EXPECT_EQ(widest->share, cum.at(widest->name)) << widest->name;
  EXPECT_EQ(widest->name.rfind("clone", 0) == 0 || widest->name.rfind("__clone", 0) == 0, true)
      << widest->name;
}

TEST_F(SamplingFlamegraph, SearchFromTheUrlHighlightsAndSumsTheFunction) {
  REQUIRE_CHROMIUM();
  RunResult text = profctl({"report", dir_->file("capture.json"), "--top", "100000"});
  ASSERT_EQ(text.exit_code, 0) << text.describe();
  RunResult dom = dump_dom("file://" + dir_->file("cpu.html") + "#search=work_fifty");
  ASSERT_EQ(dom.exit_code, 0) << dom.describe();
  size_t highlighted = 0;
  for (const Box& b : boxes_of(dom.out)) {
    const bool marked = (" " + b.cls + " ").find(" m ") != std::string::npos;
    EXPECT_EQ(marked, b.name == "work_fifty") << b.name << " class " << b.cls;
    highlighted += marked ? 1 : 0;
  }
  EXPECT_GE(highlighted, 1u);
  const auto cum = cum_percent(text.out);
  ASSERT_TRUE(cum.count("work_fifty")) << text.out;
  EXPECT_EQ(data_attribute(dom.out, "matched", "data-percent") + "%", cum.at("work_fifty"));
  const std::string matched = attribute_text(dom.out, "matched");
  EXPECT_EQ(matched.rfind("matched ", 0), 0u) << matched;
  EXPECT_NE(matched.find("(" + cum.at("work_fifty") + ")"), std::string::npos) << matched;
}

TEST_F(SamplingFlamegraph, TheSampleTypeSwitchRedrawsInTheOtherUnit) {
  REQUIRE_CHROMIUM();
  RunResult dom = dump_dom("file://" + dir_->file("cpu.html") + "#type=samples");
  ASSERT_EQ(dom.exit_code, 0) << dom.describe();
  auto capture = load_capture(dir_->path());
  ASSERT_TRUE(capture);
  const Json* cpu = profile_of(*capture, "cpu");
  ASSERT_NE(cpu, nullptr);
  const long long samples = sum_values(*cpu, value_index(*cpu, "samples"));
  EXPECT_EQ(attribute_text(dom.out, "total"), "total: samples " + std::to_string(samples));
  bool root_seen = false;
  for (const Box& b : boxes_of(dom.out)) {
    if (b.id == 0) {
      root_seen = true;
      EXPECT_EQ(b.total, samples);
    }
  }
  EXPECT_TRUE(root_seen);
  EXPECT_NE(dom.out.find("<option value=\"0\">samples (count)</option>"), std::string::npos);
}

TEST_F(SamplingFlamegraph, ALinkKeepsItsZoom) {
  REQUIRE_CHROMIUM();
  RunResult dom = dump_dom("file://" + dir_->file("cpu.html") + "#zoom=work_fifty");
  ASSERT_EQ(dom.exit_code, 0) << dom.describe();
  std::set<std::string> names;
  for (const Box& b : boxes_of(dom.out)) {
    names.insert(b.name);
    if (b.id == 0) {
      EXPECT_NE((" " + b.cls + " ").find(" a "), std::string::npos) << "root not an ancestor";
    }
  }
  EXPECT_TRUE(names.count("work_fifty"));
  EXPECT_TRUE(names.count("unit"));
  EXPECT_FALSE(names.count("work_thirty")) << "a box outside the zoomed one is drawn";
  EXPECT_NE(dom.out.find("data-name=\"work_fifty\""), std::string::npos);
  static const std::regex zoomed(R"re(data-name="work_fifty"[^>]*width:100\.0000%)re");
  EXPECT_TRUE(std::regex_search(dom.out, zoomed)) << "work_fifty is not drawn full width";
}

TEST_F(SamplingFlamegraph, TheDetailsOfABoxAreItsTextReportNumbers) {
  REQUIRE_CHROMIUM();
  RunResult text = profctl({"report", dir_->file("capture.json"), "--top", "100000"});
  ASSERT_EQ(text.exit_code, 0) << text.describe();
  RunResult dom = dump_dom("file://" + dir_->file("cpu.html") + "#details=work_fifty");
  ASSERT_EQ(dom.exit_code, 0) << dom.describe();
  const size_t at = dom.out.find("<div id=\"tip\"");
  ASSERT_NE(at, std::string::npos);
  const std::string tip = unescape(dom.out.substr(at, dom.out.find("</table>", at) - at));
  EXPECT_NE(tip.find("display: block"), std::string::npos) << tip;
  EXPECT_NE(tip.find("<b>work_fifty</b>"), std::string::npos) << tip;
  EXPECT_NE(tip.find("sampling_truth.c:"), std::string::npos) << "file:line\n" << tip;
  EXPECT_NE(tip.find("<td>module</td><td>" + fs::canonical(SAMPLING_TRUTH).string()),
            std::string::npos)
      << tip;
  // total (cum%) and self (flat%) as the text's table has them. (Self is small but not 0:
  // the CPU samples land where the CPU was, and work_fifty's own loop runs between the calls
  // to unit().)
  const auto cum = cum_percent(text.out);
  const auto flat = percent_column(text.out, 12);
  ASSERT_TRUE(cum.count("work_fifty"));
  ASSERT_TRUE(flat.count("work_fifty"));
  EXPECT_NE(tip.find("(" + cum.at("work_fifty") + ")</td></tr><tr><td>self</td>"),
            std::string::npos)
      << tip;
  EXPECT_NE(tip.find("(" + flat.at("work_fifty") + ")</td></tr></tbody>"), std::string::npos)
      << tip << "\n"
      << text.out;
}

// As many distinct stacks as a long capture of a big server: 50,000, 14 frames deep.
Capture big_capture() {
  Capture c;
  c.tool_version = "test";
  c.target = {1234, "/usr/bin/big", {"big"}};
  c.window = {"2026-12-01T10:00:00Z", 60};
  Profile cpu;
  cpu.sample_types = {{"samples", "count"}, {"cpu", "nanoseconds"}};
  cpu.period_type = SampleType{"cpu", "nanoseconds"};
  cpu.period = 10'000'000;
  auto frame = [](const std::string& name, uint64_t pc) {
    return Frame{pc, "/usr/bin/big", pc, name, "src/big.cpp", 10, false, {}};
  };
  for (int s = 0; s < 50'000; ++s) {
    std::vector<Frame> frames{frame("leaf_" + std::to_string(s), 0x5000 + s)};
    int rest = s;
    for (int level = 9; level >= 0; --level, rest /= 3) {
      frames.push_back(
          frame("ns::Level" + std::to_string(level) + "::step" + std::to_string(rest % 3) + "()",
                0x1000 + level * 16 + rest % 3));
    }
    frames.push_back(frame("main", 0x100));
    frames.push_back(frame("__libc_start_main", 0x80));
    frames.push_back(frame("_start", 0x40));
    cpu.samples.push_back({{1, 1'000'000 + 1000 * (s % 97)}, frames, {{"tid", "1234"}}});
  }
  c.profiles["cpu"] = cpu;
  return c;
}

// The page's size and that it draws are checked; how long drawing takes is a figure printed
// for the record, never asserted (tests do not assert times).
TEST(SamplingFlamegraphSize, FiftyThousandStacksFitInFourMegabytesAndDraw) {
  TempDir dir;
  {
    // Written here rather than through `profctl report`: its capture.json would be 100 MB
    // of frames to write and read back, and the page is the same (report is tested above).
    std::ofstream out(dir.file("cpu.html"));
    write_flamegraph(big_capture(), "cpu", out);
  }
  const auto size = fs::file_size(dir.file("cpu.html"));
  EXPECT_LT(size, 4u << 20) << "cpu.html is " << size << " bytes";
  REQUIRE_CHROMIUM();
  RunResult dom = dump_dom("file://" + dir.file("cpu.html"));
  ASSERT_EQ(dom.exit_code, 0) << dom.describe();
  const std::string ms = data_attribute(dom.out, "graph", "data-render-ms");
  ASSERT_FALSE(ms.empty()) << "the page did not finish drawing";
  const size_t drawn = boxes_of(dom.out).size();
  EXPECT_GT(drawn, 1000u);
  std::printf("50,000 stacks: cpu.html %zu bytes, %zu boxes drawn in %s ms\n",
              static_cast<size_t>(size), drawn, ms.c_str());
}

}  // namespace
}  // namespace profctl::testing::sampling
