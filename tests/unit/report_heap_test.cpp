// SPDX-License-Identifier: MIT
// The heap profile's outputs: heap.txt (golden), folded by sample index, the capture.json
// fields and their reader checks, and the schema on them.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "report/folded_writer.h"
#include "report/heap_text.h"
#include "report/json_reader.h"
#include "report/json_writer.h"
#include "report/profile_text.h"
#include "tests/unit/report_fixture.h"

namespace profctl {
namespace {

namespace fs = std::filesystem;
using testing::rich_capture;

std::string heap_text(const Capture& c, HeapTextOptions opts = {}) {
  std::ostringstream out;
  write_heap_text(c, out, opts);
  return out.str();
}

std::string to_json(const Capture& c) {
  std::ostringstream out;
  write_capture_json(c, out);
  return out.str();
}

Result<Capture> from_json(const std::string& text) {
  std::istringstream in(text);
  return read_capture_json(in);
}

TEST(ReportHeapText, GoDebug1WithASummaryInComments) {
  EXPECT_EQ(heap_text(rich_capture()), R"(heap profile: 3: 4296 [6: 4596] @ heap/2048
# profctl heap profile: pid 4242 (/usr/bin/app), start 2026-11-24T10:00:00Z, duration 30.50s
# sampling: one allocation per 1.00KiB allocated, on average (--mem-rate 1024)
# the "N: B [N: B] @" records count sampled allocations and their bytes, unscaled: in
# use at the end [allocated during the capture], as Go's debug=1 heap profile does
# (heap/N after the header is twice the rate, as Go writes it). The totals and stacks
# in these comments are scaled to estimate the whole program, as in heap.pb.gz.
# total: alloc_objects 54, alloc_space 9.32KiB, inuse_objects 22, inuse_space 6.17KiB (3 stacks)
# sampled: 6 allocations, 3 frees, 3 still live at the end
# not charged: 7 frees of pointers profctl did not know (allocated before the attach, or not sampled)
# note: memory allocated before the attach is unknown to this profile; its frees are not charged
# warning: target exited during the capture
#
# top 3 of 3 stacks by inuse_space:
#
#   #1  inuse_space 4.07KiB (66.00%), alloc_objects 1, alloc_space 4.07KiB, inuse_objects 1
#         helper()  at src/worker.h:10  (inlined)
#         Worker::run()  at src/worker.cpp:45  (/usr/bin/app+0x1300)
#         main  at src/main.cpp:12  (/usr/bin/app+0xf00)
#
#   #2  inuse_space 2.10KiB (34.00%), alloc_objects 32, alloc_space 3.15KiB, inuse_objects 21
#         Worker::run()  at src/worker.cpp:42  (/usr/bin/app+0x1234)
#         main  at src/main.cpp:12  (/usr/bin/app+0xf00)
#
#   #3  inuse_space 0 (0.00%), alloc_objects 21, alloc_space 2.10KiB, inuse_objects 0
#         burn()  at src/burn.cpp:7  (/usr/bin/app+0x1100)
#         Worker::run()  at src/worker.cpp:42  (/usr/bin/app+0x1234)
#         main  at src/main.cpp:12  (/usr/bin/app+0xf00)
#
# top 4 of 4 functions by inuse_space:
#         flat   flat%    sum%         cum    cum%  function
#      4.07KiB  66.00%  66.00%     4.07KiB  66.00%  helper()
#      2.10KiB  34.00% 100.00%     6.17KiB 100.00%  Worker::run()
#            0   0.00% 100.00%     6.17KiB 100.00%  main
#            0   0.00% 100.00%           0   0.00%  burn()
#
# peak in use: 7.22KiB, 33 objects (sampled 4: 4.29KiB) at +1.50s, in 2 stacks
#
#   #1  4.07KiB (56.41%), 1 object (sampled 1: 4.00KiB)
#         helper()  at src/worker.h:10  (inlined)
#         Worker::run()  at src/worker.cpp:45  (/usr/bin/app+0x1300)
#         main  at src/main.cpp:12  (/usr/bin/app+0xf00)
#
#   #2  3.15KiB (43.59%), 32 objects (sampled 3: 300B)
#         Worker::run()  at src/worker.cpp:42  (/usr/bin/app+0x1234)
#         main  at src/main.cpp:12  (/usr/bin/app+0xf00)
#
# long-lived (still live at the end and older than 10.00s): 4.07KiB, 1 object (sampled 1: 4.00KiB), in 1 stack
#
#   #1  4.07KiB (100.00%), 1 object (sampled 1: 4.00KiB), oldest 25.00s (thread 4243)
#         helper()  at src/worker.h:10  (inlined)
#         Worker::run()  at src/worker.cpp:45  (/usr/bin/app+0x1300)
#         main  at src/main.cpp:12  (/usr/bin/app+0xf00)
#
# records (Go's debug=1 format, most bytes in use first; pprof reads their numbers, but names
# functions only from the binaries, by module where it cannot: heap.pb.gz has every name):

1: 4096 [1: 4096] @ 0x55d0c0a01301 0x55d0c0a00f00
#	0x55d0c0a01300	helper()	src/worker.h:10
#	0x55d0c0a01300	Worker::run()	src/worker.cpp:45
#	0x55d0c0a00f00	main	src/main.cpp:12

2: 200 [3: 300] @ 0x55d0c0a01235 0x55d0c0a00f00
#	0x55d0c0a01234	Worker::run()	src/worker.cpp:42
#	0x55d0c0a00f00	main	src/main.cpp:12

0: 0 [2: 200] @ 0x55d0c0a01101 0x55d0c0a01234 0x55d0c0a00f00
#	0x55d0c0a01100	burn()	src/burn.cpp:7
#	0x55d0c0a01234	Worker::run()	src/worker.cpp:42
#	0x55d0c0a00f00	main	src/main.cpp:12

--- Memory map: ---
)");
  // write_profile_text gives the same for "heap".
  std::ostringstream via_profile_text;
  write_profile_text(rich_capture(), "heap", via_profile_text, TextOptions{10, false, ""});
  EXPECT_EQ(via_profile_text.str(), heap_text(rich_capture()));
}

TEST(ReportHeapText, SampleIndexTopNAndSummaryOnly) {
  const std::string text = heap_text(rich_capture(), {1, "alloc_objects", false});
  EXPECT_NE(text.find("# top 1 of 3 stacks by alloc_objects:\n#\n#   #1  alloc_objects 32 "
                      "(59.26%), alloc_space 3.15KiB, inuse_objects 21, inuse_space 2.10KiB\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("#   #2"), text.find("#   #2  3.15KiB"))  // only the peak's second stack
      << text;
  EXPECT_NE(text.find("#   ... 1 more stacks\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("# records"), std::string::npos) << text;
  EXPECT_EQ(text.find("\n1: 4096"), std::string::npos) << text;
  // An unknown name falls back to the default type.
  EXPECT_NE(heap_text(rich_capture(), {10, "bogus", true}).find("stacks by inuse_space:"),
            std::string::npos);
}

TEST(ReportHeapText, UnknownFramesNoLeaksAndRateOne) {
  Capture c;
  c.target = {7, "/bin/x", {}};
  Profile p = testing::heap_profile();
  p.period = 1;
  p.samples = {{{1, 16, 1, 16}, {testing::unknown_in_app()}, {}, {1, 16, 1, 16}}};
  p.heap->leaks = {};
  p.heap->counters["missed_frees"] = 2;
  p.heap->counters["ring_dropped"] = 5;
  p.heap->counters["queue_dropped"] = 3;
  p.heap->counters["table_dropped"] = 1;
  c.profiles["heap"] = p;
  const std::string text = heap_text(c);
  for (const char* s :
       {"heap profile: 1: 16 [1: 16] @ heap/2\n",
        "# sampling: every allocation is recorded (--mem-rate 1)\n",
        "# missed: 2 frees were lost (their addresses were allocated again); charged late\n",
        "# untracked: 1 sampled allocations did not fit the target's pointer table",
        "# long-lived: no allocation still live at the end is older than 10.00s\n",
        "1: 16 [1: 16] @ 0x55d0c0a02001\n#\t0x55d0c0a02000\tapp+0x2000\n\n"}) {
    EXPECT_NE(text.find(s), std::string::npos) << "missing \"" << s << "\" in\n" << text;
  }
}

TEST(ReportHeapText, SaysWhenRawValuesAreMissing) {
  Capture c = rich_capture();
  c.profiles["heap"].samples[0].raw_values.clear();
  const std::string text = heap_text(c);
  EXPECT_NE(text.find("# (this capture has no raw values for some stacks"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\n21: 2149 [32: 3224] @ 0x55d0c0a01235"), std::string::npos) << text;
  EXPECT_EQ(heap_text(rich_capture()).find("no raw values"), std::string::npos);
}

TEST(ReportHeapText, HostileNumbersDoNotOverflow) {
  Capture c;
  Profile p = testing::heap_profile();
  p.period = INT64_MAX;
  for (Sample& s : p.samples) {
    s.values = {INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX};
    s.raw_values = {INT64_MAX, INT64_MAX, INT64_MAX, INT64_MAX};
  }
  c.profiles["heap"] = p;
  const std::string text = heap_text(c);
  EXPECT_EQ(text.rfind("heap profile: 9223372036854775807: 9223372036854775807 "
                       "[9223372036854775807: 9223372036854775807] @ heap/9223372036854775807\n",
                       0),
            0u)
      << text;
}

TEST(ReportProfileTextSaturates, HostileTotalsStickAtTheLimit) {
  // Values from a user's capture.json: sums must not overflow (undefined behaviour).
  Capture c;
  Profile& p = c.profiles["block"];
  p.sample_types = {{"contentions", "count"}};
  p.samples = {{{INT64_MAX}, {testing::burn()}, {}}, {{INT64_MAX}, {testing::burn()}, {}}};
  std::ostringstream out;
  write_profile_text(c, "block", out, TextOptions{10, false, ""});
  EXPECT_NE(out.str().find("total: contentions 9223372036854775807 "), std::string::npos)
      << out.str();
  EXPECT_NE(out.str().find("9223372036854775807 100.00% 100.00%"), std::string::npos) << out.str();
}

TEST(ReportHeapFolded, ValueOfTheChosenSampleType) {
  const Capture c = rich_capture();
  const Profile& heap = c.profiles.at("heap");
  auto folded = [&c](size_t index) {
    std::ostringstream out;
    write_folded(c, "heap", out, index);
    return out.str();
  };
  EXPECT_EQ(find_sample_type(heap, ""), 3u);  // default_sample_type: inuse_space
  EXPECT_EQ(find_sample_type(heap, "alloc_space"), 1u);
  EXPECT_EQ(find_sample_type(heap, "cpu"), std::nullopt);
  EXPECT_EQ(find_sample_type(c.profiles.at("cpu"), ""), std::nullopt);
  EXPECT_EQ(folded(3), R"(main;Worker::run() 2149
main;Worker::run();burn() 0
main;Worker::run();helper() 4172
)");
  EXPECT_EQ(folded(*find_sample_type(heap, "alloc_objects")), R"(main;Worker::run() 32
main;Worker::run();burn() 21
main;Worker::run();helper() 1
)");
}

TEST(ReportHeapJson, FieldNames) {
  const nlohmann::json j = nlohmann::json::parse(to_json(rich_capture()));
  const auto& h = j["profiles"]["heap"];
  EXPECT_EQ(h["default_sample_type"], "inuse_space");
  EXPECT_EQ(h["period_type"], nlohmann::json::parse(R"({"type": "space", "unit": "bytes"})"));
  EXPECT_EQ(h["period"], 1024);
  EXPECT_EQ(h["samples"][0]["values"], nlohmann::json::parse("[32, 3224, 21, 2149]"));
  EXPECT_EQ(h["samples"][0]["raw_values"], nlohmann::json::parse("[3, 300, 2, 200]"));
  EXPECT_EQ(h["counters"]["unknown_frees"], 7);
  EXPECT_EQ(h["peak"]["at_ns"], 1500000000);
  EXPECT_EQ(h["peak"]["bytes"], 7396);
  EXPECT_EQ(h["peak"]["stacks"][1]["raw_bytes"], 300);
  EXPECT_FALSE(h["peak"]["stacks"][0].contains("oldest_age_ns"));
  EXPECT_EQ(h["leaks"]["min_age_ns"], 10000000000LL);
  EXPECT_EQ(h["leaks"]["stacks"][0]["oldest_age_ns"], 25000000000LL);
  EXPECT_EQ(h["leaks"]["stacks"][0]["oldest_tid"], 4243);
  EXPECT_EQ(h["leaks"]["stacks"][0]["frames"][0]["function"], "helper()");
  // Other profiles get none of these.
  const auto& cpu = j["profiles"]["cpu"];
  for (const char* k : {"default_sample_type", "counters", "peak", "leaks"}) {
    EXPECT_FALSE(cpu.contains(k)) << k;
  }
  EXPECT_FALSE(cpu["samples"][0].contains("raw_values"));
}

TEST(ReportHeapJson, RoundTrips) {
  const Capture c = rich_capture();
  Result<Capture> back = from_json(to_json(c));
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->profiles.at("heap"), c.profiles.at("heap"));
  EXPECT_TRUE(back->profiles.at("heap").heap.has_value());
  EXPECT_FALSE(back->profiles.at("cpu").heap.has_value());
}

TEST(ReportHeapJson, ReaderChecksTheHeapFields) {
  const nlohmann::json good = nlohmann::json::parse(to_json(rich_capture()));
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& h) { h["default_sample_type"] = "cpu"; },
       "profiles.heap.default_sample_type: \"cpu\" is not one of the sample types"},
      {[](auto& h) { h["samples"][1]["raw_values"].push_back(1); },
       "profiles.heap.samples[1].raw_values: has 5 values for 4 sample types"},
      {[](auto& h) { h["samples"][0]["raw_values"][2] = "2"; },
       "profiles.heap.samples[0].raw_values[2]: expected an integer, got string"},
      {[](auto& h) { h["counters"]["unknown_frees"] = -1; },
       "profiles.heap.counters.unknown_frees: integer out of range"},
      {[](auto& h) { h["peak"].erase("at_ns"); }, "profiles.heap.peak.at_ns: missing"},
      {[](auto& h) { h["peak"]["stacks"][0].erase("raw_bytes"); },
       "profiles.heap.peak.stacks[0].raw_bytes: missing"},
      {[](auto& h) { h["leaks"]["stacks"][0]["oldest_tid"] = "4243"; },
       "profiles.heap.leaks.stacks[0].oldest_tid: expected an integer, got string"},
      {[](auto& h) { h["leaks"]["stacks"] = nlohmann::json::object(); },
       "profiles.heap.leaks.stacks: expected an array, got object"},
  };
  for (const Case& c : cases) {
    nlohmann::json j = good;
    c.edit(j["profiles"]["heap"]);
    Result<Capture> r = from_json(j.dump());
    ASSERT_FALSE(r.ok()) << c.message;
    EXPECT_EQ(r.error().message(), "malformed profctl capture: " + c.message);
  }
}

// tests/tools/validate_json.py on `doc`: its exit status.
int validate(const std::string& doc) {
  const fs::path dir = fs::temp_directory_path() / ("profctl-heap-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path file = dir / "heap.json";
  std::ofstream(file) << doc;
  const fs::path root = testing::repo_root();
  const std::string cmd = "/usr/bin/python3 '" + (root / "tests/tools/validate_json.py").string() +
                          "' '" + (root / "schema/profctl.capture-1.schema.json").string() + "' '" +
                          file.string() + "' 2>/dev/null";
  const int status = std::system(cmd.c_str());
  fs::remove_all(dir);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ReportHeapJson, SchemaChecksTheHeapSections) {
  const nlohmann::json good = nlohmann::json::parse(to_json(rich_capture()));
  EXPECT_EQ(validate(good.dump()), 0);
  for (const auto& edit : std::vector<std::function<void(nlohmann::json&)>>{
           [](auto& h) { h["counters"]["unknown_frees"] = -1; },
           [](auto& h) { h["peak"].erase("at_ns"); },
           [](auto& h) { h["leaks"]["stacks"][0].erase("frames"); },
           [](auto& h) { h["leaks"]["stacks"][0]["oldest_age_ns"] = "25s"; },
           [](auto& h) { h["samples"][0]["raw_values"][0] = 1.5; },
           [](auto& h) { h["default_sample_type"] = 3; },
       }) {
    nlohmann::json j = good;
    edit(j["profiles"]["heap"]);
    EXPECT_EQ(validate(j.dump()), 1) << j["profiles"]["heap"].dump().substr(0, 300);
  }
}

}  // namespace
}  // namespace profctl
