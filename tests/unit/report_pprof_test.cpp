// SPDX-License-Identifier: MIT
// pprof writer: the decoded protobuf's structure, and `go tool pprof` reading the file.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "report/heap_text.h"
#include "report/pprof_writer.h"
#include "report/profile.pb.h"
#include "tests/common/go_tool.h"
#include "tests/unit/report_fixture.h"

namespace profctl {
namespace {

namespace fs = std::filesystem;
namespace pb = perftools::profiles;
using testing::go_binary;
using testing::rich_capture;

std::string write(const Capture& c, const std::string& kind) {
  std::ostringstream out;
  Result<void> ok = write_pprof(c, kind, out);
  EXPECT_TRUE(ok.ok()) << (ok.ok() ? "" : ok.error().message());
  return out.str();
}

std::string gunzip(const std::string& in) {
  z_stream zs{};
  EXPECT_EQ(inflateInit2(&zs, 15 + 16), Z_OK);  // gzip only, not zlib or raw
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
  EXPECT_EQ(rc, Z_STREAM_END);
  inflateEnd(&zs);
  return out;
}

pb::Profile decode(const std::string& gz) {
  pb::Profile p;
  EXPECT_TRUE(p.ParseFromString(gunzip(gz)));
  return p;
}

// A decoded profile with helpers to follow its indices.
struct View {
  pb::Profile p;
  const std::string& str(int64_t i) const { return p.string_table(static_cast<int>(i)); }
  const pb::Location& loc(uint64_t id) const { return p.location(static_cast<int>(id - 1)); }
  const pb::Function& fn(uint64_t id) const { return p.function(static_cast<int>(id - 1)); }
  std::string line_name(const pb::Line& l) const { return str(fn(l.function_id()).name()); }
};

TEST(ReportPprof, IsGzip) {
  const std::string gz = write(rich_capture(), "cpu");
  ASSERT_GT(gz.size(), 2u);
  EXPECT_EQ(static_cast<unsigned char>(gz[0]), 0x1f);
  EXPECT_EQ(static_cast<unsigned char>(gz[1]), 0x8b);
}

TEST(ReportPprof, UnknownKindIsAnError) {
  std::ostringstream out;
  Result<void> r = write_pprof(rich_capture(), "mutex", out);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "no mutex profile in the capture");
}

TEST(ReportPprof, HeaderFields) {
  const View v{decode(write(rich_capture(), "cpu"))};
  EXPECT_EQ(v.str(0), "");
  ASSERT_EQ(v.p.sample_type_size(), 2);
  EXPECT_EQ(v.str(v.p.sample_type(0).type()), "samples");
  EXPECT_EQ(v.str(v.p.sample_type(0).unit()), "count");
  EXPECT_EQ(v.str(v.p.sample_type(1).type()), "cpu");
  EXPECT_EQ(v.str(v.p.sample_type(1).unit()), "nanoseconds");
  EXPECT_EQ(v.str(v.p.period_type().type()), "cpu");
  EXPECT_EQ(v.p.period(), 10101010);
  EXPECT_EQ(v.p.time_nanos(), 1795514400LL * 1'000'000'000);  // 2026-11-24T10:00:00Z
  EXPECT_EQ(v.p.duration_nanos(), 30'500'000'000);
  ASSERT_EQ(v.p.comment_size(), 3);
  EXPECT_EQ(v.str(v.p.comment(0)), "profctl: partial: 3 samples lost; totals are lower bounds");
  EXPECT_EQ(v.str(v.p.comment(1)), "profctl: lost 3 samples");
}

TEST(ReportPprof, MappingsComeFromModulesExeFirst) {
  const View v{decode(write(rich_capture(), "cpu"))};
  ASSERT_EQ(v.p.mapping_size(), 2);
  const pb::Mapping& app = v.p.mapping(0);
  EXPECT_EQ(app.id(), 1u);
  EXPECT_EQ(v.str(app.filename()), "/usr/bin/app");
  EXPECT_EQ(app.memory_start(), 0x55d0c0a00000u);
  EXPECT_EQ(app.memory_limit(), 0x55d0c0a40000u);
  EXPECT_EQ(app.file_offset(), 0u);
  EXPECT_EQ(v.str(app.build_id()), "0123456789abcdef0123456789abcdef01234567");
  // Every location is named, the unnamed function by its report name: pprof has nothing to
  // symbolize. One frame has no file: has_filenames (and inline frames) say so.
  EXPECT_TRUE(app.has_functions());
  EXPECT_FALSE(app.has_filenames());
  EXPECT_FALSE(app.has_line_numbers());
  EXPECT_FALSE(app.has_inline_frames());
  const pb::Mapping& libc = v.p.mapping(1);
  EXPECT_EQ(v.str(libc.filename()), testing::kLibc);
  EXPECT_EQ(libc.file_offset(), 0x28000u);
  EXPECT_FALSE(libc.has_functions());  // no cpu sample is in libc

  const View heap{decode(write(rich_capture(), "heap"))};
  EXPECT_TRUE(heap.p.mapping(0).has_functions());
  EXPECT_TRUE(heap.p.mapping(0).has_filenames());
  EXPECT_TRUE(heap.p.mapping(0).has_line_numbers());
  EXPECT_TRUE(heap.p.mapping(0).has_inline_frames());
}

// With its executable segments recorded, a module is one Mapping per segment with the
// segment's own start, limit and file offset, so that pprof's address -> file offset -> ELF
// address arithmetic lands where profctl's did.
TEST(ReportPprof, OneMappingPerExecutableSegment) {
  Capture c = rich_capture();
  for (CaptureModule& m : c.modules) {
    if (m.path == "/usr/bin/app") {
      m.exec_segments = {{0x55d0c0a01000, 0x55d0c0a03000, 0x1000},
                         {0x55d0c0a20000, 0x55d0c0a21000, 0x1f000}};
    }
  }
  const View v{decode(write(c, "cpu"))};
  ASSERT_EQ(v.p.mapping_size(), 3);  // app's two segments first, then libc's whole range
  EXPECT_EQ(v.str(v.p.mapping(0).filename()), "/usr/bin/app");
  EXPECT_EQ(v.p.mapping(0).memory_start(), 0x55d0c0a01000u);
  EXPECT_EQ(v.p.mapping(0).memory_limit(), 0x55d0c0a03000u);
  EXPECT_EQ(v.p.mapping(0).file_offset(), 0x1000u);
  EXPECT_EQ(v.str(v.p.mapping(0).build_id()), "0123456789abcdef0123456789abcdef01234567");
  EXPECT_EQ(v.p.mapping(1).memory_start(), 0x55d0c0a20000u);
  EXPECT_EQ(v.p.mapping(1).file_offset(), 0x1f000u);
  EXPECT_EQ(v.str(v.p.mapping(2).filename()), testing::kLibc);
  // burn() at 0x55d0c0a01100 is in the first segment; main at 0xf00 in no executable
  // segment: no mapping rather than a wrong one.
  const pb::Sample& s0 = v.p.sample(0);
  EXPECT_EQ(v.loc(s0.location_id(0)).mapping_id(), 1u);
  EXPECT_EQ(v.loc(s0.location_id(2)).mapping_id(), 0u);
  // The second segment has no location: nothing to promise about it.
  EXPECT_FALSE(v.p.mapping(1).has_functions());
}

TEST(ReportPprof, SamplesLocationsAndInlinedLines) {
  const View v{decode(write(rich_capture(), "cpu"))};
  ASSERT_EQ(v.p.sample_size(), 5);

  // Sample 1: helper() inlined into Worker::run() is ONE location with two lines, the
  // innermost first and the caller last (Go's order); then main.
  const pb::Sample& s1 = v.p.sample(1);
  EXPECT_EQ(s1.value(0), 1);
  EXPECT_EQ(s1.value(1), 10101010);
  ASSERT_EQ(s1.location_id_size(), 2);
  const pb::Location& inl = v.loc(s1.location_id(0));
  EXPECT_EQ(inl.address(), 0x55d0c0a01300u);
  EXPECT_EQ(inl.mapping_id(), 1u);
  ASSERT_EQ(inl.line_size(), 2);
  EXPECT_EQ(v.line_name(inl.line(0)), "helper()");
  EXPECT_EQ(inl.line(0).line(), 10);
  EXPECT_EQ(v.str(v.fn(inl.line(0).function_id()).filename()), "src/worker.h");
  EXPECT_EQ(v.line_name(inl.line(1)), "Worker::run()");
  EXPECT_EQ(inl.line(1).line(), 45);
  EXPECT_EQ(v.line_name(v.loc(s1.location_id(1)).line(0)), "main");

  // Sample 0 and 2 share their locations; Worker::run() has one Function for both lines.
  const pb::Sample& s0 = v.p.sample(0);
  const pb::Sample& s2 = v.p.sample(2);
  ASSERT_EQ(s0.location_id_size(), 3);
  EXPECT_EQ(std::vector<uint64_t>(s0.location_id().begin(), s0.location_id().end()),
            std::vector<uint64_t>(s2.location_id().begin(), s2.location_id().end()));
  EXPECT_EQ(v.line_name(v.loc(s0.location_id(0)).line(0)), "burn()");
  EXPECT_EQ(v.loc(s0.location_id(1)).line(0).function_id(), inl.line(1).function_id());
  EXPECT_EQ(v.loc(s0.location_id(1)).line(0).line(), 42);

  // Unknown function: a location with its address and mapping and a line named as
  // profctl's text names it (module file name + offset), with no file.
  const pb::Location& unknown = v.loc(v.p.sample(3).location_id(0));
  EXPECT_EQ(unknown.address(), 0x55d0c0a02000u);
  EXPECT_EQ(unknown.mapping_id(), 1u);
  ASSERT_EQ(unknown.line_size(), 1);
  EXPECT_EQ(v.line_name(unknown.line(0)), "app+0x2000");
  EXPECT_EQ(v.str(v.fn(unknown.line(0).function_id()).filename()), "");

  // A pc in no module gets mapping 0.
  const pb::Location& vdso = v.loc(v.p.sample(4).location_id(0));
  EXPECT_EQ(vdso.mapping_id(), 0u);
  EXPECT_EQ(v.line_name(vdso.line(0)), "__vdso_clock_gettime");

  // Locations are unique per pc; ids are 1..n in order.
  std::set<uint64_t> addresses;
  for (int i = 0; i < v.p.location_size(); ++i) {
    EXPECT_EQ(v.p.location(i).id(), static_cast<uint64_t>(i + 1));
    EXPECT_TRUE(addresses.insert(v.p.location(i).address()).second);
  }
  EXPECT_EQ(v.p.location_size(), 6);  // burn, run@42, main, run@45(+helper), unknown, vdso
  // Functions are unique per (name, file).
  EXPECT_EQ(v.p.function_size(), 6);  // burn, Worker::run, main, helper, app+0x2000, vdso
}

TEST(ReportPprof, Labels) {
  const View v{decode(write(rich_capture(), "cpu"))};
  const pb::Sample& s0 = v.p.sample(0);
  ASSERT_EQ(s0.label_size(), 2);
  // Labels in key order: "thread" (string), "tid" (number).
  EXPECT_EQ(v.str(s0.label(0).key()), "thread");
  EXPECT_EQ(v.str(s0.label(0).str()), "worker-1");
  EXPECT_EQ(v.str(s0.label(1).key()), "tid");
  EXPECT_EQ(s0.label(1).num(), 4243);
  EXPECT_EQ(s0.label(1).str(), 0);
  EXPECT_EQ(v.p.sample(4).label_size(), 0);
}

TEST(ReportPprof, HeapSampleTypesDefaultAndPeriod) {
  const View v{decode(write(rich_capture(), "heap"))};
  ASSERT_EQ(v.p.sample_type_size(), 4);
  const char* types[][2] = {{"alloc_objects", "count"},
                            {"alloc_space", "bytes"},
                            {"inuse_objects", "count"},
                            {"inuse_space", "bytes"}};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(v.str(v.p.sample_type(i).type()), types[i][0]);
    EXPECT_EQ(v.str(v.p.sample_type(i).unit()), types[i][1]);
  }
  EXPECT_EQ(v.str(v.p.default_sample_type()), "inuse_space");
  EXPECT_EQ(v.str(v.p.period_type().type()), "space");
  EXPECT_EQ(v.str(v.p.period_type().unit()), "bytes");
  EXPECT_EQ(v.p.period(), 1024);
  ASSERT_EQ(v.p.sample_size(), 3);
  // The scaled values, not the raw ones.
  EXPECT_EQ(std::vector<int64_t>(v.p.sample(0).value().begin(), v.p.sample(0).value().end()),
            (std::vector<int64_t>{32, 3224, 21, 2149}));
  ASSERT_EQ(v.p.comment_size(), 3);
  EXPECT_EQ(v.str(v.p.comment(0)),
            "profctl: memory allocated before the attach is not in this profile; 7 frees of "
            "pointers it does not know (allocated before the attach, or not sampled) were not "
            "charged");
  EXPECT_EQ(v.str(v.p.comment(1)),
            "profctl: peak in use 7396 bytes (33 objects, scaled) at +1.500s; see heap.txt or "
            "capture.json for its stacks");
  // Profiles without a default type leave the field unset.
  EXPECT_EQ(decode(write(rich_capture(), "cpu")).default_sample_type(), 0);
}

// --- go tool pprof -------------------------------------------------------------------

struct CmdResult {
  int status;
  std::string output;
};

CmdResult run_command(const std::string& cmd) {
  CmdResult r{-1, {}};
  FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (f == nullptr) {
    return r;
  }
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) {
    r.output.append(buf.data(), n);
  }
  r.status = pclose(f);
  return r;
}

// Runs of blanks as one space: pprof aligns its columns to the widest value.
std::string squeeze(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == ' ' && !out.empty() && out.back() == ' ') {
      continue;
    }
    out += ch;
  }
  return out;
}

class GoPprof : public ::testing::Test {
 protected:
  void SetUp() override {
    PROFCTL_REQUIRE_GO();
    dir_ = fs::temp_directory_path() / ("profctl-pprof-" + std::to_string(getpid()));
    fs::create_directories(dir_ / "home");
    env_ = "HOME='" + (dir_ / "home").string() + "' GOCACHE='" + (dir_ / "gocache").string() +
           "' GOFLAGS= PPROF_TMPDIR='" + dir_.string() + "' PPROF_BINARY_PATH='" + dir_.string() +
           "' ";
  }
  void TearDown() override {
    if (!dir_.empty()) {
      fs::remove_all(dir_);
    }
  }
  std::string write_text(const std::string& name, const std::string& text) {
    const fs::path file = dir_ / name;
    std::ofstream(file, std::ios::binary) << text;
    return file.string();
  }
  std::string write_file(const std::string& kind) {
    const fs::path file = dir_ / (kind + ".pb.gz");
    std::ofstream(file, std::ios::binary) << write(rich_capture(), kind);
    return file.string();
  }
  CmdResult pprof(const std::string& args) {
    return run_command(env_ + "'" + go_binary() + "' tool pprof -symbolize=none " + args);
  }

  fs::path dir_;
  std::string env_;
};

TEST_F(GoPprof, RawShowsFunctionsAndSamples) {
  const std::string file = write_file("cpu");
  CmdResult r = pprof("-raw '" + file + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  for (const char* s : {"samples/count cpu/nanoseconds", "burn()", "Worker::run()", "helper()",
                        "main", "__vdso_clock_gettime", "/usr/bin/app", "2   20202020",
                        "4   40404040", "tid:[4243]", "thread:[worker-1]"}) {
    EXPECT_NE(r.output.find(s), std::string::npos) << "missing \"" << s << "\" in\n" << r.output;
  }
}

TEST_F(GoPprof, TopParsesAndTotals) {
  const std::string file = write_file("cpu");
  CmdResult r = pprof("-top -nodecount=20 '" + file + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  // 20.2 + 10.1 + 30.3 + 10.1 + 40.4 ms
  EXPECT_NE(r.output.find("111.11ms total"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("burn()"), std::string::npos) << r.output;
  CmdResult heap = pprof("-top -sample_index=inuse_space '" + write_file("heap") + "'");
  ASSERT_EQ(heap.status, 0) << heap.output;
  EXPECT_NE(heap.output.find("6.17kB total"), std::string::npos) << heap.output;
  EXPECT_NE(heap.output.find("helper()"), std::string::npos) << heap.output;
}

TEST_F(GoPprof, HeapEverySampleIndex) {
  const std::string file = write_file("heap");
  struct Case {
    const char* index;
    const char* total;
  };
  // inuse_space is the default (default_sample_type); the others by -sample_index.
  for (const Case& c : {Case{"", "6.17kB total"}, Case{"inuse_space", "6.17kB total"},
                        Case{"alloc_space", "9.32kB total"}, Case{"alloc_objects", "54 total"},
                        Case{"inuse_objects", "22 total"}}) {
    const std::string index = *c.index ? std::string("-sample_index=") + c.index + " " : "";
    CmdResult r = pprof("-top " + index + "'" + file + "'");
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find(c.total), std::string::npos) << c.index << ":\n" << r.output;
  }
  CmdResult r = pprof("-top -sample_index=alloc_objects '" + file + "'");
  // burn() made 21 of the 54 estimated allocations.
  EXPECT_NE(r.output.find("Worker::run()"), std::string::npos) << r.output;
  EXPECT_NE(squeeze(r.output).find(" 21 38.89% "), std::string::npos) << r.output;
}

TEST_F(GoPprof, ReadsTheHeapTextAsGoDebug1) {
  std::ostringstream text;
  write_heap_text(rich_capture(), text, HeapTextOptions{});
  const std::string file = write_text("heap.txt", text.str());
  CmdResult r = pprof("-raw '" + file + "'");
  ASSERT_EQ(r.status, 0) << r.output;
  // pprof's legacy parser scales the raw records itself (heap/2048 -> rate 1024) and lands
  // on the same numbers as heap.pb.gz.
  for (const char* s :
       {"alloc_objects/count alloc_space/bytes inuse_objects/count inuse_space/bytes",
        " 32 3224 21 2149: ", " 1 4172 1 4172: ", " 21 2149 0 0: ", "Period: 1024",
        "bytes:[4096]"}) {
    EXPECT_NE(squeeze(r.output).find(s), std::string::npos) << "missing \"" << s << "\" in\n"
                                                            << r.output;
  }
}

// The memory map section after the records: pprof charges each address to its module (by
// the code segment it lies in), with the module's build id, instead of "<unknown>".
TEST_F(GoPprof, ReadsTheHeapTextsMemoryMap) {
  Capture c = rich_capture();
  for (CaptureModule& m : c.modules) {
    m.exec_segments = {{m.start + 0x1000, m.start + 0x3000, 0x1000}};
  }
  std::ostringstream text;
  write_heap_text(c, text, HeapTextOptions{});
  EXPECT_NE(text.str().find("\n--- Memory map: ---\n0x7f3a2c028000-0x7f3a2c02a000 r-xp "
                            "/usr/lib/x86_64-linux-gnu/libc.so.6 (@1000) "
                            "b7f1c3d2e4a5968778695a4b3c2d1e0f\n"),
            std::string::npos)
      << text.str();
  const std::string file = write_text("heap.txt", text.str());
  CmdResult raw = pprof("-raw '" + file + "'");
  ASSERT_EQ(raw.status, 0) << raw.output;
  // pprof moves a legacy mapping's start back by its file offset.
  EXPECT_NE(raw.output.find("0x55d0c0a00000/0x55d0c0a03000/0x0 /usr/bin/app "
                            "0123456789abcdef0123456789abcdef01234567"),
            std::string::npos)
      << raw.output;
  CmdResult top = pprof("-top -sample_index=alloc_space '" + file + "'");
  ASSERT_EQ(top.status, 0) << top.output;
  EXPECT_EQ(top.output.find("<unknown>"), std::string::npos) << top.output;
  EXPECT_NE(top.output.find("[app]"), std::string::npos) << top.output;
}

}  // namespace
}  // namespace profctl
