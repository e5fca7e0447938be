// SPDX-License-Identifier: MIT
// capture.json: writer shape, schema validation, reader round trip and reader errors.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>

#include "report/json_reader.h"
#include "report/json_writer.h"
#include "tests/unit/report_fixture.h"

namespace profctl {
namespace {

namespace fs = std::filesystem;
using testing::rich_capture;

std::string to_json(const Capture& c) {
  std::ostringstream out;
  write_capture_json(c, out);
  return out.str();
}

Result<Capture> from_json(const std::string& text) {
  std::istringstream in(text);
  return read_capture_json(in);
}

// Runs tests/tools/validate_json.py on `doc`; returns its exit status.
int validate(const std::string& doc, const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("profctl-report-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const fs::path file = dir / name;
  std::ofstream(file) << doc;
  const fs::path root = testing::repo_root();
  const std::string cmd = "/usr/bin/python3 '" + (root / "tests/tools/validate_json.py").string() +
                          "' '" + (root / "schema/profctl.capture-1.schema.json").string() + "' '" +
                          file.string() + "'";
  const int status = std::system(cmd.c_str());
  fs::remove_all(dir);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(ReportJson, WritesTheFixedNames) {
  const nlohmann::json j = nlohmann::json::parse(to_json(rich_capture()));
  EXPECT_EQ(j["schema"], "profctl.capture/1");
  EXPECT_EQ(j["target"]["pid"], 4242);
  EXPECT_EQ(j["target"]["exe"], "/usr/bin/app");
  EXPECT_EQ(j["target"]["cmdline"][2], "with space");
  EXPECT_EQ(j["window"]["start"], "2026-11-24T10:00:00Z");
  EXPECT_EQ(j["window"]["duration_s"], 30.5);

  const auto& t = j["threads"][0];
  EXPECT_EQ(t["tid"], 4242);
  EXPECT_EQ(t["state"], "S");
  EXPECT_EQ(t["wait_syscall"], "futex");
  EXPECT_EQ(t["wait_address"], "0x7f3a2c0041a0");
  EXPECT_FALSE(j["threads"][1].contains("wait_address"));
  EXPECT_EQ(j["threads"][1]["truncated_reason"], "stack copy limit (64 KiB) reached");
  EXPECT_FALSE(j["threads"][2].contains("truncated_reason"));

  // A known frame, an inlined one and an unknown one, field by field.
  EXPECT_EQ(t["frames"][1], nlohmann::json::parse(R"J({"pc": "0x55d0c0a01300",
      "function": "helper()", "module": "/usr/bin/app", "offset": "0x1300",
      "file": "src/worker.h", "line": 10, "inlined": true})J"));
  EXPECT_EQ(t["frames"][3], nlohmann::json::parse(R"J({"pc": "0x55d0c0a02000",
      "function": null, "module": "/usr/bin/app", "offset": "0x2000",
      "file": null, "line": null, "inlined": false})J"));

  const auto& cpu = j["profiles"]["cpu"];
  EXPECT_EQ(cpu["sample_types"][1],
            nlohmann::json::parse(R"({"type":"cpu","unit":"nanoseconds"})"));
  EXPECT_EQ(cpu["samples"][0]["values"], nlohmann::json::parse("[2, 20202020]"));
  EXPECT_EQ(cpu["samples"][0]["labels"]["tid"], "4243");
  EXPECT_EQ(cpu["period"], 10101010);
  EXPECT_EQ(cpu["dropped"], 3);
  EXPECT_EQ(j["modules"][1]["start"], "0x55d0c0a00000");
  EXPECT_EQ(j["pause"]["world_stopped_ns"], 410000);
  EXPECT_EQ(j["warnings"][0], "target exited during the capture");
}

TEST(ReportJson, IsPrettyPrintedWithTwoSpaces) {
  const std::string text = to_json(rich_capture());
  EXPECT_EQ(text.rfind("{\n  \"schema\": \"profctl.capture/1\",\n", 0), 0u) << text.substr(0, 80);
  EXPECT_EQ(text.back(), '\n');
}

TEST(ReportJson, NonUtf8StringsDoNotThrow) {
  Capture c = rich_capture();
  c.target.exe = "/tmp/\xff\xfe-app";
  std::string text;
  EXPECT_NO_THROW(text = to_json(c));
  EXPECT_TRUE(from_json(text).ok());
}

TEST(ReportJson, ValidatesAgainstTheSchema) {
  EXPECT_EQ(validate(to_json(rich_capture()), "rich.json"), 0);
  EXPECT_EQ(validate(to_json(Capture{}), "empty.json"), 0);
}

TEST(ReportJson, SchemaRejectsABrokenFrame) {
  nlohmann::json j = nlohmann::json::parse(to_json(rich_capture()));
  j["threads"][0]["frames"][0].erase("inlined");
  EXPECT_EQ(validate(j.dump(), "no-inlined.json"), 1);
  j = nlohmann::json::parse(to_json(rich_capture()));
  j["profiles"]["cpu"]["samples"][0]["frames"][0]["pc"] = 1234;
  EXPECT_EQ(validate(j.dump(), "numeric-pc.json"), 1);
  j = nlohmann::json::parse(to_json(rich_capture()));
  j["schema"] = "profctl.capture/2";
  EXPECT_EQ(validate(j.dump(), "schema2.json"), 1);
}

TEST(ReportJson, SchemaAllowsAdditiveFields) {
  nlohmann::json j = nlohmann::json::parse(to_json(rich_capture()));
  j["some_future_field"] = {{"x", 1}};
  j["threads"][0]["future"] = true;
  EXPECT_EQ(validate(j.dump(), "additive.json"), 0);
}

TEST(ReportJsonReader, RoundTripsEveryField) {
  const Capture c = rich_capture();
  Result<Capture> back = from_json(to_json(c));
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->target, c.target);
  EXPECT_EQ(back->window, c.window);
  EXPECT_EQ(back->pause, c.pause);
  EXPECT_EQ(back->threads, c.threads);
  EXPECT_EQ(back->profiles, c.profiles);
  EXPECT_EQ(back->modules, c.modules);
  EXPECT_TRUE(*back == c);
  // And the writer is a fixed point.
  EXPECT_EQ(to_json(*back), to_json(c));
}

TEST(ReportJsonReader, RoundTripsEdgeValues) {
  Capture c;
  c.window.duration_s = 0.1 + 0.2;  // not representable in a short decimal
  Frame f{UINT64_MAX, "[unknown]", UINT64_MAX, std::nullopt, std::nullopt, 0, false, {}};
  CaptureThread t;
  t.frames = {f};
  t.cpu_ns = UINT64_MAX;
  t.wait_address = 0;
  c.threads = {t};
  Profile p;
  p.sample_types = {{"v", "count"}};
  p.samples = {{{INT64_MIN}, {}, {}}, {{INT64_MAX}, {f}, {{"k", ""}}}};
  c.profiles["x"] = p;
  c.pause.median_ns = 0;
  Result<Capture> back = from_json(to_json(c));
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_TRUE(*back == c);
}

TEST(ReportJsonReader, AcceptsTheMinimalDesignDocument) {
  Result<Capture> c = from_json(R"({"schema": "profctl.capture/1",
    "target": {"pid": 1, "exe": "/x", "cmdline": []},
    "window": {"start": "2026-11-24T10:00:00Z", "duration_s": 30},
    "threads": [{"tid": 1, "name": "x", "state": "S", "frames": []}],
    "profiles": {"heap": {"sample_types": [{"type": "alloc_objects", "unit": "count"}],
                          "samples": [{"values": [3], "frames": []}]}},
    "unknown_future_field": [1, 2, 3]})");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->window.duration_s, 30.0);
  EXPECT_EQ(c->profiles["heap"].samples[0].values[0], 3);
}

std::string error_of(const std::string& text) {
  Result<Capture> c = from_json(text);
  EXPECT_FALSE(c.ok()) << "accepted: " << text.substr(0, 200);
  return c.ok() ? std::string() : c.error().message();
}

TEST(ReportJsonReader, RejectsInputThatIsNotACapture) {
  EXPECT_EQ(error_of(""), "not a profctl capture: empty input");
  EXPECT_EQ(error_of(" \n\t"), "not a profctl capture: empty input");
  EXPECT_EQ(error_of("[1, 2]"), "not a profctl capture: the top level is an array, not an object");
  EXPECT_EQ(error_of("42"), "not a profctl capture: the top level is a number, not an object");
  EXPECT_EQ(error_of("{}"), "not a profctl capture: no \"schema\" field");
  EXPECT_EQ(error_of(R"({"schema": 1})"),
            "not a profctl capture: \"schema\" is a number, expected \"profctl.capture/1\"");
  EXPECT_EQ(error_of(R"({"schema": "heaptrack/1"})"),
            "not a profctl capture: unknown schema \"heaptrack/1\", expected "
            "\"profctl.capture/1\"");
  EXPECT_EQ(error_of(R"({"schema": "profctl.capture/1x"})").rfind("not a profctl capture", 0), 0u);
  EXPECT_EQ(error_of("{\"schema\": "),
            "not a profctl capture: truncated JSON (parse error at line 1, column 12: syntax "
            "error while parsing value - unexpected end of input; expected '[', '{', or a "
            "literal)");
  EXPECT_EQ(error_of("{\"schema\" 1}").rfind("not a profctl capture: not JSON (parse error", 0),
            0u);
  EXPECT_EQ(error_of("{} trailing").rfind("not a profctl capture: not JSON (", 0), 0u);
  EXPECT_EQ(error_of("\x89PNG\r\n").rfind("not a profctl capture: not JSON (", 0), 0u);
}

TEST(ReportJsonReader, RejectsANewerSchema) {
  nlohmann::json j = nlohmann::json::parse(to_json(rich_capture()));
  j["schema"] = "profctl.capture/2";
  EXPECT_EQ(error_of(j.dump()),
            "capture is from a newer profctl (schema profctl.capture/2); this profctl reads "
            "profctl.capture/1");
}

TEST(ReportJsonReader, NamesTheMissingOrMistypedField) {
  const nlohmann::json good = nlohmann::json::parse(to_json(rich_capture()));
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](auto& j) { j.erase("target"); }, "malformed profctl capture: target: missing"},
      {[](auto& j) { j["target"]["pid"] = "4242"; },
       "malformed profctl capture: target.pid: expected an integer, got string"},
      {[](auto& j) { j["target"]["pid"] = 1.5; },
       "malformed profctl capture: target.pid: expected an integer, got number"},
      {[](auto& j) { j["target"]["pid"] = 1LL << 40; },
       "malformed profctl capture: target.pid: integer out of range"},
      {[](auto& j) { j["target"]["cmdline"][1] = nullptr; },
       "malformed profctl capture: target.cmdline[1]: expected a string, got null"},
      {[](auto& j) { j["window"].erase("duration_s"); },
       "malformed profctl capture: window.duration_s: missing"},
      {[](auto& j) { j["threads"] = nlohmann::json::object(); },
       "malformed profctl capture: threads: expected an array, got object"},
      {[](auto& j) { j["threads"][0]["frames"][2].erase("inlined"); },
       "malformed profctl capture: threads[0].frames[2].inlined: missing"},
      {[](auto& j) { j["threads"][0]["frames"][0]["pc"] = 1234; },
       "malformed profctl capture: threads[0].frames[0].pc: expected a hex string (\"0x...\"), "
       "got number"},
      {[](auto& j) { j["threads"][0]["frames"][0]["pc"] = "1234"; },
       "malformed profctl capture: threads[0].frames[0].pc: expected a hex string (\"0x...\"), "
       "got \"1234\""},
      {[](auto& j) { j["threads"][0]["frames"][0]["offset"] = "0x10000000000000000"; },
       "malformed profctl capture: threads[0].frames[0].offset: expected a hex string "
       "(\"0x...\"), got \"0x10000000000000000\""},
      {[](auto& j) { j["threads"][0]["frames"][0]["line"] = "7"; },
       "malformed profctl capture: threads[0].frames[0].line: expected an integer, got string"},
      {[](auto& j) { j["threads"][1]["truncated"] = "yes"; },
       "malformed profctl capture: threads[1].truncated: expected a boolean, got string"},
      {[](auto& j) { j["threads"][0]["wait_address"] = "0xzz"; },
       "malformed profctl capture: threads[0].wait_address: expected a hex string (\"0x...\"), "
       "got \"0xzz\""},
      {[](auto& j) { j["profiles"]["cpu"]["samples"][1]["values"][0] = -1.0; },
       "malformed profctl capture: profiles.cpu.samples[1].values[0]: expected an integer, got "
       "number"},
      {[](auto& j) { j["profiles"]["cpu"]["samples"][1]["values"].push_back(1); },
       "malformed profctl capture: profiles.cpu.samples[1].values: has 3 values for 2 sample "
       "types"},
      {[](auto& j) { j["profiles"]["heap"]["samples"][0]["labels"]["tid"] = 7; },
       "malformed profctl capture: profiles.heap.samples[0].labels.tid: expected a string, got "
       "number"},
      {[](auto& j) { j["profiles"]["cpu"].erase("sample_types"); },
       "malformed profctl capture: profiles.cpu.sample_types: missing"},
      {[](auto& j) { j["profiles"]["cpu"]["dropped"] = -3; },
       "malformed profctl capture: profiles.cpu.dropped: integer out of range"},
      {[](auto& j) { j["pause"]["threads"] = nullptr; },
       "malformed profctl capture: pause.threads: expected an integer, got null"},
      {[](auto& j) { j["modules"][0].erase("build_id"); },
       "malformed profctl capture: modules[0].build_id: missing"},
      {[](auto& j) { j["options"]["rate"] = 99; },
       "malformed profctl capture: options.rate: expected a string, got number"},
      {[](auto& j) { j["warnings"] = "x"; },
       "malformed profctl capture: warnings: expected an array, got string"},
      // Impossible numbers: a clear error rather than a report that wraps or overflows.
      {[](auto& j) { j["window"]["duration_s"] = 1e308; },
       "malformed profctl capture: window.duration_s: out of range (1e+308; must be 0 to 1e9 "
       "seconds)"},
      {[](auto& j) { j["window"]["duration_s"] = -1.5; },
       "malformed profctl capture: window.duration_s: out of range (-1.5; must be 0 to 1e9 "
       "seconds)"},
      {[](auto& j) { j["profiles"]["cpu"]["samples"][1]["values"][0] = 9223372036854775808u; },
       "malformed profctl capture: profiles.cpu.samples[1].values[0]: integer out of range"},
      {[](auto& j) { j["profiles"]["cpu"]["detail_omitted"] = -1; },
       "malformed profctl capture: profiles.cpu.detail_omitted: integer out of range"},
  };
  for (const Case& c : cases) {
    nlohmann::json j = good;
    c.edit(j);
    EXPECT_EQ(error_of(j.dump()), c.message);
  }
}

TEST(ReportJsonReader, NeverCrashesOnTruncatedOrCorruptInput) {
  const std::string good = to_json(rich_capture());
  // Every cut before the closing brace (the trailing newline alone is not a cut).
  const size_t end = good.rfind('}');
  for (size_t n = 0; n <= end; n += 7) {
    Result<Capture> c = from_json(good.substr(0, n));
    EXPECT_FALSE(c.ok()) << n;
  }
  // Flip bytes here and there: anything may come back, but no crash and no exception.
  uint32_t seed = 12345;
  for (int i = 0; i < 2000; ++i) {
    std::string bad = good;
    for (int k = 0; k < 3; ++k) {
      seed = seed * 1103515245 + 12345;
      bad[(seed >> 8) % bad.size()] = static_cast<char>(seed >> 24);
    }
    EXPECT_NO_THROW({ (void)from_json(bad); });
  }
}

TEST(ReportJsonReader, SurvivesDeepNesting) {
  const std::string deep =
      "{\"schema\": \"profctl.capture/1\", \"target\": " + std::string(100000, '[') +
      std::string(100000, ']') + "}";
  EXPECT_EQ(error_of(deep), "malformed profctl capture: target: expected an object, got array");
  EXPECT_FALSE(from_json(std::string(100000, '[')).ok());
}

// What a profile lost: written beside `dropped` (its sum), valid under the schema, read back
// as it was; a capture whose `dropped` disagrees with its loss is refused, not reported.
TEST(ReportJson, LossRoundTripsAndValidates) {
  Capture c = rich_capture();
  c.profiles["heap"].loss = ProfileLoss{665481, 4500000, 71519, 2};
  c.profiles["heap"].dropped = 4571521;
  const std::string doc = to_json(c);
  const nlohmann::json j = nlohmann::json::parse(doc);
  EXPECT_EQ(j["profiles"]["heap"]["dropped"], 4571521);
  EXPECT_EQ(j["profiles"]["heap"]["loss"],
            nlohmann::json::parse(R"({"recorded": 665481, "ring_dropped": 4500000,
                            "queue_dropped": 71519, "capped": 2})"));
  EXPECT_FALSE(j["profiles"]["cpu"].contains("loss"));
  EXPECT_EQ(validate(doc, "loss.json"), 0);
  Result<Capture> back = from_json(doc);
  ASSERT_TRUE(back.ok()) << back.error().message();
  EXPECT_EQ(back->profiles["heap"].loss, c.profiles["heap"].loss);
  EXPECT_EQ(back->profiles["heap"].dropped, 4571521u);

  nlohmann::json bad = j;
  bad["profiles"]["heap"]["dropped"] = 1613376;
  EXPECT_NE(error_of(bad.dump())
                .find("profiles.heap.dropped: 1613376 disagrees with the loss it "
                      "sums (4571521)"),
            std::string::npos)
      << error_of(bad.dump());
  nlohmann::json typo = j;
  typo["profiles"]["heap"]["loss"]["ring_droped"] = 1;
  EXPECT_EQ(validate(typo.dump(), "loss-typo.json"), 1);
}

}  // namespace
}  // namespace profctl
