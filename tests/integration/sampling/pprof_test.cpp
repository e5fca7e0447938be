// SPDX-License-Identifier: MIT
// `go tool pprof` in its default mode (it symbolizes whatever a profile leaves unsymbolized,
// from the files the mappings name) reads profctl's cpu.pb.gz with exactly the function names
// of profctl's own text, at every location: a target that calls through PLT stubs into a
// stripped library (whose static function has no name at all) and into libc. And when pprof
// is made to symbolize the main binary itself (-symbolize=force), its answers agree with
// profctl's: the mappings' start, limit and file offset are the true ones.
// Target: tests/targets/plt (plt_target, libpltlib.so). golang-go and binutils are test
// dependencies: without them the test fails.
#include <gtest/gtest.h>
#include <zlib.h>

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "report/profile.pb.h"
#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

using Stack = std::vector<std::string>;  // leaf first
using StackCounts = std::map<Stack, long long>;

// pprof marks a function inlined at a location with " (inline)"; profctl's text marks it
// elsewhere. The names are compared without it.
std::string strip_inline(std::string name) {
  static const std::string kInline = " (inline)";
  if (name.size() > kInline.size() && name.ends_with(kInline)) {
    name.resize(name.size() - kInline.size());
  }
  return name;
}

// profctl's own cpu.folded: "root;...;leaf count", names as profctl's text writes them.
StackCounts parse_folded(const std::string& text) {
  StackCounts out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    const size_t space = line.rfind(' ');
    if (space == std::string::npos) {
      continue;
    }
    Stack stack;
    std::istringstream frames(line.substr(0, space));
    for (std::string f; std::getline(frames, f, ';');) {
      stack.insert(stack.begin(), f);
    }
    out[stack] += std::stoll(line.substr(space + 1));
  }
  return out;
}

// `go tool pprof -traces`: blocks between "-----------+---" lines; label lines ("tid:  4242"),
// then "<value>   <leaf>" and one caller name per line.
StackCounts parse_traces(const std::string& text) {
  static const std::regex kLabel(R"(^\s*[A-Za-z_]+:\s.*$)");
  static const std::regex kFirst(R"(^\s*(\d+)\s{3}(.+)$)");
  static const std::regex kNext(R"(^\s{13}(\S.*)$)");
  StackCounts out;
  std::istringstream in(text);
  std::string line;
  bool in_trace = false;
  Stack stack;
  long long value = 0;
  auto flush = [&] {
    if (!stack.empty()) {
      out[stack] += value;
    }
    stack.clear();
  };
  while (std::getline(in, line)) {
    std::smatch m;
    if (line.starts_with("-----------+")) {
      flush();
      in_trace = true;
    } else if (!in_trace || std::regex_match(line, kLabel)) {
      continue;
    } else if (stack.empty() && std::regex_match(line, m, kFirst)) {
      value = std::stoll(m[1]);
      stack.push_back(strip_inline(m[2]));
    } else if (!stack.empty() && std::regex_match(line, m, kNext)) {
      stack.push_back(strip_inline(m[1]));
    }
  }
  flush();
  return out;
}

struct Cost {
  long long flat = 0;
  long long cum = 0;
  bool operator==(const Cost&) const = default;
};

// flat (leaf) and cum (once per stack) per function name, from stacks.
std::map<std::string, Cost> costs_of(const StackCounts& stacks) {
  std::map<std::string, Cost> out;
  for (const auto& [stack, n] : stacks) {
    out[stack.front()].flat += n;
    std::set<std::string> seen(stack.begin(), stack.end());
    for (const auto& name : seen) {
      out[name].cum += n;
    }
  }
  return out;
}

// `go tool pprof -top`: "flat flat% sum% cum cum% name" rows.
std::map<std::string, Cost> parse_top(const std::string& text) {
  static const std::regex kRow(R"(^\s*(\d+)\s+\S+%\s+\S+%\s+(\d+)\s+\S+%\s+(.+)$)");
  std::map<std::string, Cost> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, kRow)) {
      Cost& c = out[strip_inline(m[3])];
      c.flat += std::stoll(m[1]);
      c.cum = std::max(c.cum, std::stoll(m[2]));
    }
  }
  return out;
}

std::string describe(const StackCounts& stacks) {
  std::ostringstream s;
  for (const auto& [stack, n] : stacks) {
    s << "  " << n << " ";
    for (const auto& f : stack) {
      s << f << " < ";
    }
    s << "\n";
  }
  return s.str();
}

// The address of `name` in `nm` output ("0000000000001100 t lib_inner").
std::optional<uint64_t> nm_address(const std::string& nm, const std::string& name) {
  std::istringstream in(nm);
  std::string addr, type, sym;
  while (in >> addr >> type >> sym) {
    if (sym == name) {
      return std::stoull(addr, nullptr, 16);
    }
  }
  return std::nullopt;
}

// Samples in the pprof file are many per stack (one per thread sample): compare counts.
const std::vector<std::string> kPprofCounts = {"-sample_index=samples", "-nodefraction=0",
                                               "-edgefraction=0", "-nodecount=100000"};

class SamplingPprof : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!why_cannot_run().empty()) {
      return;
    }
    dir_ = new TempDir();
    RunResult r = run(
        run_argv({"--profiles", "cpu", "--rate", "199", "-o", dir_->path()}, {PLT_TARGET, "1500"}));
    if (r.exit_code != 0) {
      setup_error_ = "profctl run: " + r.describe();
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
  static std::string file(const std::string& name) { return dir_->file(name); }

  static TempDir* dir_;
  static std::string setup_error_;
};
TempDir* SamplingPprof::dir_ = nullptr;
std::string SamplingPprof::setup_error_;

TEST_F(SamplingPprof, ProfctlNamesEveryFrameOfThePltTarget) {
  auto folded = read_text(file("cpu.folded"));
  ASSERT_TRUE(folded);
  const StackCounts stacks = parse_folded(*folded);
  const auto costs = costs_of(stacks);
  auto nm = read_text(PLTLIB_NM);
  ASSERT_TRUE(nm) << PLTLIB_NM;
  auto inner = nm_address(*nm, "lib_inner");
  ASSERT_TRUE(inner) << *nm;
  char name[64];
  std::snprintf(name, sizeof name, "libpltlib.so+0x%llx", static_cast<unsigned long long>(*inner));
  // lib_inner: stripped, static; every one of its pcs under the name of its start (CFI).
  for (const std::string& fn :
       std::vector<std::string>{"plt_loop", "main", "_start", "lib_spin", name}) {
    EXPECT_GT(costs.count(fn) ? costs.at(fn).cum : 0, 0) << fn << " not in\n" << describe(stacks);
  }
  // labs and lib_nop are one to four instructions reached through a PLT stub. On some
  // virtual machines the CPU timer's interrupt is never taken inside such a leaf (the
  // samples land on the stub's jump instead, seen on a 2-vCPU Firecracker guest): either
  // the function or its stub must be there, each under its own name.
  for (const std::string& fn : std::vector<std::string>{"lib_nop", "labs"}) {
    const long long cum = (costs.count(fn) ? costs.at(fn).cum : 0) +
                          (costs.count(fn + "@plt") ? costs.at(fn + "@plt").cum : 0);
    EXPECT_GT(cum, 0) << fn << " (or " << fn << "@plt) not in\n" << describe(stacks);
  }
  for (const auto& [fn, cost] : costs) {
    EXPECT_FALSE(fn.starts_with("libpltlib.so+") && fn != name)
        << fn << ": a pc of lib_inner named by itself, not by the function's start\n"
        << describe(stacks);
    EXPECT_EQ(fn.find("??"), std::string::npos) << describe(stacks);
  }
  // lib_inner is always called by lib_spin, which plt_loop calls.
  for (const auto& [stack, n] : stacks) {
    if (stack.front() == name) {
      ASSERT_GE(stack.size(), 4u) << describe(stacks);
      EXPECT_EQ(Stack(stack.begin(), stack.begin() + 4),
                (Stack{name, "lib_spin", "plt_loop", "main"}))
          << describe(stacks);
    }
  }
}

TEST_F(SamplingPprof, DefaultGoToolPprofTracesHaveProfctlsNamesAtEveryLocation) {
  auto folded = read_text(file("cpu.folded"));
  ASSERT_TRUE(folded);
  const StackCounts ours = parse_folded(*folded);
  ASSERT_FALSE(ours.empty());
  std::vector<std::string> args = kPprofCounts;
  args.insert(args.end(), {"-traces", file("cpu.pb.gz")});
  auto r = go_pprof(args);
  ASSERT_TRUE(r) << kNoGo;
  ASSERT_EQ(r->exit_code, 0) << r->describe();
  const StackCounts theirs = parse_traces(r->out);
  EXPECT_EQ(theirs, ours) << "go tool pprof -traces:\n"
                          << describe(theirs) << "profctl cpu.folded:\n"
                          << describe(ours) << "pprof stderr: " << r->err;
}

TEST_F(SamplingPprof, DefaultGoToolPprofTopHasProfctlsFunctionsAndCosts) {
  auto folded = read_text(file("cpu.folded"));
  ASSERT_TRUE(folded);
  const auto ours = costs_of(parse_folded(*folded));
  std::vector<std::string> args = kPprofCounts;
  args.insert(args.end(), {"-top", file("cpu.pb.gz")});
  auto r = go_pprof(args);
  ASSERT_TRUE(r) << kNoGo;
  ASSERT_EQ(r->exit_code, 0) << r->describe();
  const auto theirs = parse_top(r->out);
  ASSERT_EQ(theirs.size(), ours.size()) << r->out;
  for (const auto& [fn, cost] : ours) {
    ASSERT_TRUE(theirs.count(fn)) << fn << " missing from pprof -top:\n" << r->out;
    EXPECT_EQ(theirs.at(fn).flat, cost.flat) << fn << "\n" << r->out;
    EXPECT_EQ(theirs.at(fn).cum, cost.cum) << fn << "\n" << r->out;
  }
}

// gzip, for rewriting a .pb.gz (gunzip: sampling_support.h).
std::string gzip(const std::string& in) {
  z_stream zs{};
  deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(deflateBound(&zs, in.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

// With every name taken out of profctl's cpu.pb.gz, pprof in its default mode symbolizes the
// executable itself, from its DWARF, at the ELF address the mapping gives for each location:
// `go tool pprof` takes pc - memory_start + p_vaddr of the first executable PT_LOAD
// (cmd/pprof objTool), google/pprof pc - memory_start + file_offset through the program
// headers. It must find the function profctl found at every location, which holds only when
// each mapping is the true executable segment: a whole-module mapping (start of the first
// segment, offset 0) is off by the text segment's address (issue 9: libpython +0x15861d
// read as +0x15861d+0xf5000), and so is a page-aligned start with lld's layout.
TEST_F(SamplingPprof, PprofSymbolizingTheExecutableFromItsMappingsFindsProfctlsFunctions) {
  // With GNU ld's layout (address == offset) a wrong mapping can still come out right:
  // plt_target is linked by lld on purpose (tests/targets/plt/CMakeLists.txt).
  ASSERT_EQ(PLT_TARGET_LLD, 1) << "plt_target was not linked with lld (install lld)";
  auto gz = read_text(file("cpu.pb.gz"));
  ASSERT_TRUE(gz);
  auto raw = gunzip(*gz);
  ASSERT_TRUE(raw) << "cpu.pb.gz is not gzip";
  perftools::profiles::Profile p;
  ASSERT_TRUE(p.ParseFromString(*raw));
  // pc -> profctl's physical (last) function name, for the executable's locations that have
  // DWARF: `go tool pprof` symbolizes C from DWARF only (_start, from crt1.o, has none).
  std::map<uint64_t, std::string> ours;
  std::set<uint64_t> exe_mappings;
  for (const auto& m : p.mapping()) {
    if (canonical(p.string_table(static_cast<int>(m.filename()))) == canonical(PLT_TARGET)) {
      exe_mappings.insert(m.id());
    }
  }
  ASSERT_FALSE(exe_mappings.empty());
  for (auto& loc : *p.mutable_location()) {
    if (exe_mappings.count(loc.mapping_id()) && loc.line_size() > 0) {
      const auto& last = loc.line(loc.line_size() - 1);
      const auto& fn = p.function(static_cast<int>(last.function_id() - 1));
      if (!p.string_table(static_cast<int>(fn.filename())).empty()) {
        ours[loc.address()] = p.string_table(static_cast<int>(fn.name()));
      }
    }
    loc.clear_line();
  }
  for (auto& m : *p.mutable_mapping()) {
    m.set_has_functions(false);
    m.set_has_filenames(false);
    m.set_has_line_numbers(false);
    m.set_has_inline_frames(false);
  }
  p.clear_function();
  ASSERT_GE(ours.size(), 3u);
  const std::string stripped = file("cpu-unsymbolized.pb.gz");
  ASSERT_TRUE(write_text(stripped, gzip(p.SerializeAsString())));

  auto r = go_pprof({"-raw", stripped});
  ASSERT_TRUE(r) << kNoGo;
  ASSERT_EQ(r->exit_code, 0) << r->describe();
  // "    10: 0x56426b26b1fd M=1 plt_loop /path/plt_target.c:22 s=0", inlined callers on the
  // lines after it; the physical function is the location's last line.
  static const std::regex kLoc(R"(^\s*\d+: 0x([0-9a-f]+) M=(\d+)(.*)$)");
  std::vector<std::string> lines;
  {
    std::istringstream in(r->out.substr(std::min(r->out.find("Locations"), r->out.size())));
    for (std::string line; std::getline(in, line) && !line.starts_with("Mappings");) {
      lines.push_back(line);
    }
  }
  size_t checked = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    std::smatch m;
    if (!std::regex_match(lines[i], m, kLoc) || !exe_mappings.count(std::stoull(m[2]))) {
      continue;
    }
    const uint64_t pc = std::stoull(m[1], nullptr, 16);
    auto it = ours.find(pc);
    if (it == ours.end()) {
      continue;  // no DWARF there
    }
    std::string last;
    std::istringstream first(m[3]);
    first >> last;
    for (size_t j = i + 1; j < lines.size() && !std::regex_match(lines[j], kLoc); ++j) {
      std::istringstream words(lines[j]);
      words >> last;
    }
    EXPECT_EQ(last, it->second) << "pc 0x" << std::hex << pc << ": " << lines[i] << "\n"
                                << "pprof stderr: " << r->err;
    ++checked;
  }
  EXPECT_GE(checked, 3u) << r->out;
}

}  // namespace
}  // namespace profctl::testing::sampling
