// SPDX-License-Identifier: MIT
// One set of numbers (issue 21): a capture that loses probe records says the same count of
// lost records in every output — the note on stderr, capture.json (`dropped`, `loss`, the
// heap's counters), the text report, the pprof comments and the end-of-capture summary —
// and its header says it is partial, by what share, never that it is complete. A 64 KiB
// ring (--probe-ring-bytes) cannot hold what 8 threads record when every allocation (or
// every contended lock) is recorded and --probe-lossy drops what does not fit instead of
// holding the writer: the drain sleeps 2 ms when it finds the ring empty,
// and 8 threads fill 64 KiB in far less. Targets: heap_target.c, wait_target.c.
#include <gtest/gtest.h>

#include <regex>
#include <sstream>

#include "sampling_support.h"

namespace profctl::testing::sampling {
namespace {

struct LossCase {
  const char* kind;     // the profile
  const char* target;   // its program
  const char* command;  // a workload that overflows a 64 KiB ring
  const char* reply;    // how the target's answer begins when it is done
  const char* unit;     // what the outputs call its records
  std::vector<std::string> flags;
};

void PrintTo(const LossCase& c, std::ostream* os) { *os << c.kind; }

// The note on stderr: "profctl: note: KIND: partial: lost N of M UNIT (P): ...".
struct Note {
  std::string account;  // "lost N of M UNIT (P): ..."
  long long lost = 0, seen = 0;
  std::string share;
};

std::optional<Note> loss_note(const std::string& err, const LossCase& c) {
  const std::regex re(std::string("profctl: note: ") + c.kind + ": partial: (lost ([0-9]+) of " +
                      "([0-9]+) " + c.unit + " \\(([^)]*)\\):[^;\n]*);");
  std::smatch m;
  if (!std::regex_search(err, m, re)) {
    return std::nullopt;
  }
  return Note{m[1], std::stoll(m[2]), std::stoll(m[3]), m[4]};
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) {
    out.push_back(l);
  }
  return out;
}

class Loss : public ::testing::TestWithParam<LossCase> {};

TEST_P(Loss, EveryOutputGivesTheSameCountAndSaysPartial) {
  PROFCTL_REQUIRE_PROFCTL();
  const LossCase& c = GetParam();
  const std::string kind = c.kind;
  Child target({c.target});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  std::vector<std::string> args = {"--profiles",
                                   kind,
                                   "--probe-ring-bytes",
                                   "64K",
                                   "--probe-lossy",
                                   "--format",
                                   "all",
                                   "-v",
                                   "-o",
                                   dir.path()};
  args.insert(args.end(), c.flags.begin(), c.flags.end());
  // Stack copies (16 KiB a record), not walked stacks (~100 bytes): the ring must fill.
  std::vector<std::string> argv = {"/usr/bin/env", "PROFCTL_PROBE_WALK=0"};
  for (auto& a : attach_argv(target.pid(), args)) {
    argv.push_back(a);
  }
  BgProcess p(argv);
  start_and_wait_for_probes(target, p);
  const std::string reply = target.command(c.command, milliseconds(120000)).value_or("");
  ASSERT_EQ(reply.rfind(c.reply, 0), 0u)
      << "\"" << reply << "\": the target died? " << describe_tasks(target.pid());
  end_with_sigint(p);
  const std::string err = p.err();

  // stderr: the note, with the count and the share.
  const auto note = loss_note(err, c);
  ASSERT_TRUE(note) << "no loss note for " << kind << " (did the 64 KiB ring not fill?):\n" << err;
  ASSERT_GT(note->lost, 0);
  ASSERT_GE(note->seen, note->lost);

  // capture.json: dropped is the loss's sum, and the loss is the note's.
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* prof = profile_of(*capture, kind);
  ASSERT_NE(prof, nullptr);
  ASSERT_TRUE(prof->contains("loss")) << prof->dump().substr(0, 2000);
  const Json& loss = (*prof)["loss"];
  const long long ring = loss.at("ring_dropped"), queue = loss.at("queue_dropped"),
                  capped = loss.at("capped"), recorded = loss.at("recorded");
  EXPECT_EQ(prof->value("dropped", -1LL), note->lost) << loss.dump();
  EXPECT_EQ(ring + queue + capped, note->lost) << loss.dump();
  EXPECT_EQ(recorded + note->lost, note->seen) << loss.dump();
  if (kind == "heap") {
    // The heap's own counters are the same numbers, not another count of them.
    const Json& k = prof->at("counters");
    EXPECT_EQ(k.value("ring_dropped", -1LL), ring) << k.dump();
    EXPECT_EQ(k.value("queue_dropped", -1LL), queue) << k.dump();
    EXPECT_EQ(k.value("capped", -1LL), capped) << k.dump();
    EXPECT_EQ(k.value("sampled_allocs", -1LL), recorded) << k.dump();
  }

  // The text report: the partial line right under its first line of profctl's, the same
  // account, lower-bound totals, and no claim of completeness.
  auto text = read_text(dir.file(kind + ".txt"));
  ASSERT_TRUE(text);
  const auto lines = lines_of(*text);
  const std::string pre = kind == "heap" ? "# " : "";  // heap.txt: Go's header, then comments
  const size_t first = kind == "heap" ? 1 : 0;
  ASSERT_GT(lines.size(), first + 1) << *text;
  const std::string partial_text = lines[first + 1];
  const std::string partial = partial_text.substr(std::min(pre.size(), partial_text.size()));
  EXPECT_EQ(partial.rfind("partial: " + note->share + " of " + c.unit + " lost (", 0), 0u) << *text;
  EXPECT_NE(partial.find("); totals are lower bounds"), std::string::npos) << partial;
  EXPECT_NE(text->find("\n" + pre + note->account + "\n"), std::string::npos)
      << "the text's account differs from stderr's \"" << note->account << "\":\n"
      << text->substr(0, 3000);
  EXPECT_NE(text->find("\n" + pre + "total (lower bounds):"), std::string::npos);
  EXPECT_EQ(text->find("every allocation is recorded"), std::string::npos) << *text;

  // pprof: the same two lines, as its first comments.
  auto comments = pprof_comments(dir.file(kind + ".pb.gz"));
  ASSERT_TRUE(comments);
  ASSERT_GE(comments->size(), 2u);
  EXPECT_EQ((*comments)[0], "profctl: " + partial);
  EXPECT_EQ((*comments)[1], "profctl: " + note->account);

  // The flame graph's subtitle and the summary on stderr.
  auto page = read_text(dir.file(kind + ".html"));
  ASSERT_TRUE(page);
  EXPECT_NE(page->find(partial + "; " + note->account), std::string::npos);
  EXPECT_NE(err.find("(" + partial + ")\n"), std::string::npos) << err;

  // No output gives another count: every "lost N of M" anywhere is the note's.
  const std::regex any_count("lost ([0-9]+) of ([0-9]+) " + std::string(c.unit));
  for (const std::string* out : {&err, static_cast<const std::string*>(&*text)}) {
    for (std::sregex_iterator it(out->begin(), out->end(), any_count), end; it != end; ++it) {
      EXPECT_EQ(std::stoll((*it)[1]), note->lost) << (*it)[0];
      EXPECT_EQ(std::stoll((*it)[2]), note->seen) << (*it)[0];
    }
  }
  EXPECT_TRUE(outputs_valid(dir.path()));
}

INSTANTIATE_TEST_SUITE_P(, Loss,
                         ::testing::Values(LossCase{"heap",
                                                    HEAP_TARGET,
                                                    "churn 8 20000",
                                                    "done churn",
                                                    "allocation records",
                                                    {"--mem-rate", "1"}},
                                           LossCase{"mutex",
                                                    WAIT_TARGET,
                                                    "mutex 8 20000 0",
                                                    "done mutex",
                                                    "wait records",
                                                    {"--mutex-fraction", "1"}}),
                         [](const ::testing::TestParamInfo<LossCase>& i) {
                           return std::string(i.param.kind);
                         });

}  // namespace
}  // namespace profctl::testing::sampling
