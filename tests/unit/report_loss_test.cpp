// SPDX-License-Identifier: MIT
// What a profile lost (ProfileLoss): the words of report/profile_loss.h, and that every
// writer (text, heap text, pprof comments, flame graph subtitle, the end-of-capture summary)
// prints the one set of numbers, says "partial" in its header and claims no completeness.
#include <gtest/gtest.h>
#include <zlib.h>

#include <array>
#include <sstream>

#include "report/capture_summary.h"
#include "report/flamegraph_writer.h"
#include "report/heap_text.h"
#include "report/pprof_writer.h"
#include "report/profile.pb.h"
#include "report/profile_loss.h"
#include "report/profile_text.h"
#include "tests/unit/report_fixture.h"

namespace profctl {
namespace {

namespace pb = perftools::profiles;

ProfileLoss loss(uint64_t recorded, uint64_t ring, uint64_t queue = 0, uint64_t capped = 0) {
  return ProfileLoss{recorded, ring, queue, capped};
}

Profile with_loss(Profile p, const ProfileLoss& l) {
  p.loss = l;
  p.dropped = l.lost();
  return p;
}

// cc1 at --mem-rate 1 as the issue saw it: 87.3% of the allocation records lost.
constexpr uint64_t kRecorded = 665'481, kRing = 4'500'000, kQueue = 71'519;
const char* const kHeapPartial =
    "partial: 87.3% of allocation records lost (ring full, not unwound in time); totals are "
    "lower bounds";
const char* const kHeapAccount =
    "lost 4571519 of 5237000 allocation records (87.3%): 4500000 ring full, 71519 not unwound "
    "in time";

Capture lossy_heap_capture() {
  Capture c;
  c.target = {7, "/usr/bin/cc1", {}};
  Profile p = testing::heap_profile();
  p.period = 1;
  c.profiles["heap"] = with_loss(p, loss(kRecorded, kRing, kQueue));
  c.warnings = {loss_warning("heap", c.profiles["heap"]), "another note"};
  return c;
}

TEST(ProfileLoss, SumsAndShares) {
  const ProfileLoss l = loss(10, 60, 25, 5);
  EXPECT_EQ(l.lost(), 90u);
  EXPECT_EQ(l.seen(), 100u);
  EXPECT_DOUBLE_EQ(l.lost_share(), 0.9);
  EXPECT_DOUBLE_EQ(ProfileLoss{}.lost_share(), 0.0);
  // Counts from the target are hostile: they saturate, never wrap.
  const ProfileLoss huge = loss(UINT64_MAX, UINT64_MAX, UINT64_MAX);
  EXPECT_EQ(huge.lost(), UINT64_MAX);
  EXPECT_EQ(huge.seen(), UINT64_MAX);
  EXPECT_LE(huge.lost_share(), 1.0);
}

TEST(ProfileLoss, PercentAsPeopleReadIt) {
  EXPECT_EQ(loss_percent(loss(10, 0)), "0%");
  EXPECT_EQ(loss_percent(loss(0, 10)), "100%");
  EXPECT_EQ(loss_percent(loss(kRecorded, kRing, kQueue)), "87.3%");
  EXPECT_EQ(loss_percent(loss(1, 1)), "50.0%");
  // Something lost is never shown as 0.0%, and not everything as 100.0%.
  EXPECT_EQ(loss_percent(loss(100'000, 1)), "<0.1%");
  EXPECT_EQ(loss_percent(loss(1, 100'000)), ">99.9%");
}

TEST(ProfileLoss, PartialLineAccountAndWarning) {
  Profile p = with_loss(testing::heap_profile(), loss(kRecorded, kRing, kQueue));
  EXPECT_EQ(partial_line("heap", p), kHeapPartial);
  EXPECT_EQ(loss_account("heap", p), kHeapAccount);
  EXPECT_EQ(loss_warning("heap", p),
            std::string("heap: partial: ") + kHeapAccount +
                "; totals are lower bounds (to lose less: fewer records (a higher --mem-rate, a "
                "smaller --probe-stack-bytes) or a larger --probe-ring-bytes)");

  Profile m = with_loss(Profile{}, loss(19'299, 1'494'075));
  EXPECT_EQ(partial_line("mutex", m),
            "partial: 98.7% of wait records lost (ring full); totals are lower bounds");
  EXPECT_EQ(loss_account("mutex", m),
            "lost 1494075 of 1513374 wait records (98.7%): 1494075 ring full");
  Profile b = with_loss(Profile{}, loss(3, 0, 0, 1));
  EXPECT_EQ(loss_warning("block", b),
            "block: partial: lost 1 of 4 wait records (25.0%): 1 over profctl's bounds; totals "
            "are lower bounds");
}

TEST(ProfileLoss, NothingLostSaysNothing) {
  Profile p = with_loss(testing::heap_profile(), loss(5, 0));
  EXPECT_EQ(partial_line("heap", p), "");
  EXPECT_EQ(loss_account("heap", p), "");
  EXPECT_EQ(loss_warning("heap", p), "");
  EXPECT_EQ(partial_line("cpu", Profile{}), "");
}

TEST(ProfileLoss, AnOlderCaptureHasOnlyDropped) {
  Profile p;
  p.dropped = 12;
  EXPECT_EQ(partial_line("cpu", p), "partial: 12 samples lost; totals are lower bounds");
  EXPECT_EQ(loss_account("cpu", p), "lost 12 samples");
  EXPECT_EQ(loss_warning("cpu", p), "cpu: partial: lost 12 samples; totals are lower bounds");
}

std::string heap_text(const Capture& c) {
  std::ostringstream out;
  write_heap_text(c, out, HeapTextOptions{});
  return out.str();
}

TEST(ProfileLoss, HeapTextSaysPartialInItsHeaderAndNeverEveryAllocation) {
  const std::string text = heap_text(lossy_heap_capture());
  // The partial line right after profctl's first line, before anything is claimed.
  const size_t first = text.find("\n# profctl heap profile: pid 7");
  ASSERT_NE(first, std::string::npos) << text;
  const size_t second = text.find('\n', first + 1);
  EXPECT_EQ(text.substr(second + 1, text.find('\n', second + 1) - second - 1),
            std::string("# ") + kHeapPartial)
      << text;
  EXPECT_EQ(text.find("every allocation is recorded"), std::string::npos) << text;
  EXPECT_NE(text.find("# sampling: every allocation is sampled (--mem-rate 1), but not every "
                      "record reached the profile (partial, above)\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# total (lower bounds): alloc_objects"), std::string::npos) << text;
  EXPECT_NE(text.find(std::string("# ") + kHeapAccount + "\n"), std::string::npos) << text;
  // Said once: the capture's warning with the same numbers is not repeated; others are.
  EXPECT_EQ(text.find("warning: heap: partial"), std::string::npos) << text;
  EXPECT_NE(text.find("# warning: another note\n"), std::string::npos) << text;
  // Exactly one count of lost records in the whole file.
  EXPECT_EQ(text.find("4571519"), text.rfind("4571519")) << text;
}

TEST(ProfileLoss, HeapTextOfACompleteProfileAtRateOneSaysEveryAllocation) {
  Capture c = lossy_heap_capture();
  c.profiles["heap"] = with_loss(c.profiles["heap"], loss(kRecorded, 0));
  c.warnings.clear();
  const std::string text = heap_text(c);
  EXPECT_NE(text.find("# sampling: every allocation is recorded (--mem-rate 1)\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("partial"), std::string::npos) << text;
  EXPECT_EQ(text.find("lower bounds"), std::string::npos) << text;
}

TEST(ProfileLoss, TextReportSaysPartialUnderItsFirstLine) {
  Capture c = testing::rich_capture();
  c.profiles["mutex"] = with_loss(c.profiles["cpu"], loss(19'299, 1'494'075));
  c.warnings = {loss_warning("mutex", c.profiles["mutex"])};
  std::ostringstream out;
  write_profile_text(c, "mutex", out, TextOptions{});
  const std::string text = out.str();
  const size_t nl = text.find('\n');
  EXPECT_EQ(text.substr(nl + 1, text.find('\n', nl + 1) - nl - 1),
            "partial: 98.7% of wait records lost (ring full); totals are lower bounds")
      << text;
  EXPECT_NE(text.find("\ntotal (lower bounds): "), std::string::npos) << text;
  EXPECT_NE(text.find("\nlost 1494075 of 1513374 wait records (98.7%): 1494075 ring full\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("warning: mutex: partial"), std::string::npos) << text;
}

std::string gunzip(const std::string& in) {
  z_stream zs{};
  EXPECT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  std::string out;
  std::array<char, 4096> buf;
  int rc = Z_OK;
  while (rc == Z_OK) {
    zs.next_out = reinterpret_cast<Bytef*>(buf.data());
    zs.avail_out = buf.size();
    rc = inflate(&zs, Z_NO_FLUSH);
    out.append(buf.data(), buf.size() - zs.avail_out);
  }
  inflateEnd(&zs);
  return out;
}

std::vector<std::string> pprof_comments(const Capture& c, const std::string& kind) {
  std::ostringstream out;
  EXPECT_TRUE(write_pprof(c, kind, out).ok());
  pb::Profile p;
  EXPECT_TRUE(p.ParseFromString(gunzip(out.str())));
  std::vector<std::string> v;
  for (int64_t i : p.comment()) {
    v.push_back(p.string_table(static_cast<int>(i)));
  }
  return v;
}

TEST(ProfileLoss, PprofCarriesItAsItsFirstComments) {
  const auto comments = pprof_comments(lossy_heap_capture(), "heap");
  ASSERT_GE(comments.size(), 3u);
  EXPECT_EQ(comments[0], std::string("profctl: ") + kHeapPartial);
  EXPECT_EQ(comments[1], std::string("profctl: ") + kHeapAccount);
  for (const auto& s : comments) {
    EXPECT_EQ(s.find("profctl: heap: partial"), std::string::npos) << s;
  }
  EXPECT_EQ(comments.back(), "profctl: another note");
}

TEST(ProfileLoss, FlameGraphSubtitleAndSummarySayIt) {
  const Capture c = lossy_heap_capture();
  std::ostringstream page;
  write_flamegraph(c, "heap", page, FlamegraphOptions{});
  EXPECT_NE(page.str().find(std::string(kHeapPartial) + "; " + kHeapAccount), std::string::npos);

  std::ostringstream sum;
  write_capture_summary(c, CaptureSummary{}, sum);
  EXPECT_NE(sum.str().find(std::string("(") + kHeapPartial + ")\n"), std::string::npos)
      << sum.str();
  // A profile with nothing in it that lost everything still has its line.
  Capture empty;
  Profile m;
  m.sample_types = {{"contentions", "count"}, {"delay", "nanoseconds"}};
  empty.profiles["mutex"] = with_loss(m, loss(0, 7));
  std::ostringstream sum2;
  write_capture_summary(empty, CaptureSummary{}, sum2);
  EXPECT_NE(sum2.str().find("profctl: mutex (delay): nothing recorded (partial: 100% of wait "
                            "records lost (ring full); totals are lower bounds)\n"),
            std::string::npos)
      << sum2.str();
}

}  // namespace
}  // namespace profctl
