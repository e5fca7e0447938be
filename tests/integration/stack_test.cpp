// SPDX-License-Identifier: MIT
// `profctl stack` on stack_target: every thread's exact stack, state, wait syscall and address,
// source lines, inline frames, the options that change them, in every build variant.
// The expected stacks are the ones written at the top of tests/targets/stack_target.c.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "support/capture.h"
#include "support/procfs.h"

namespace profctl::testing {
namespace {

const std::string kSource = "/tests/targets/stack_target.c";
const std::vector<std::string> kAllKeys = {"main",    "recurser",  "condwait", "sleeper",
                                           "spinner", "mutexwait", "sigwaiter"};
const std::vector<std::string> kThreadNames = {"recurser", "condwait",  "sleeper",
                                               "spinner",  "mutexwait", "sigwaiter"};

std::vector<Step> levels_9_to_0() {
  std::vector<Step> s;
  for (int i = 9; i >= 0; --i) {
    s.push_back(exe("level_" + std::to_string(i)));
  }
  return s;
}

// The expected stacks of stack_target.c, keyed by thread name ("main" for the main thread).
std::map<std::string, std::vector<Step>> expected_stacks(bool with_inline) {
  std::vector<Step> recurser = {lib_run("pause"), exe("recurser_block")};
  if (with_inline) {
    recurser.push_back(exe_inlined("recurser_wait"));
  }
  return {
      {"main",
       {lib_run("read"), exe("main_command_loop"), exe("main"), lib_run("__libc_start"),
        exe("_start")}},
      {"recurser", concat({recurser, levels_9_to_0(), {exe("recurser_main")}, thread_tail()})},
      {"condwait",
       concat({{lib_run("pthread_cond_wait"), exe("condwait_block"), exe("condwait_main")},
               thread_tail()})},
      {"sleeper",
       concat({{lib_run("nanosleep"), exe("sleeper_block"), exe("sleeper_main")}, thread_tail()})},
      {"spinner", concat({{exe("spin"), exe("spinner_main")}, thread_tail()})},
      {"mutexwait", concat({{lib_run("mutex_lock"), exe("mutexwait_block"), exe("mutexwait_main")},
                            thread_tail()})},
      {"sigwaiter", concat({{lib_run("read"), exe("handler_block"), exe("sigusr2_handler"),
                             lib_run("restore_rt"), exe("sig_busy_loop"), exe("sigwaiter_main")},
                            thread_tail()})},
  };
}

struct Expected {
  char state;
  const char* wait_syscall;  // nullptr: not blocked in a syscall
};
const std::map<std::string, Expected> kThreadExpect = {
    {"main", {'S', "read"}},      {"recurser", {'S', "pause"}},
    {"condwait", {'S', "futex"}}, {"sleeper", {'S', "clock_nanosleep"}},
    {"spinner", {'R', nullptr}},  {"mutexwait", {'S', "futex"}},
    {"sigwaiter", {'S', "read"}},
};

// The thread with only its non-inlined frames (what a --no-inline dump must look like).
Json without_inlined(const Json& thread) {
  Json copy = thread;
  Json frames = Json::array();
  for (const Json& f : thread["frames"]) {
    if (!f.value("inlined", false)) {
      frames.push_back(f);
    }
  }
  copy["frames"] = frames;
  return copy;
}

class StackTarget {
 public:
  explicit StackTarget(const std::string& path) : path_(path), child_({path}) {
    auto ready = child_.wait_ready();
    if (ready) {
      kv_ = parse_key_values(*ready);
      ready_ = true;
    }
  }
  bool ready() const { return ready_; }
  pid_t pid() const { return child_.pid(); }
  Child& child() { return child_; }
  const std::string& path() const { return path_; }
  pid_t tid(const std::string& name) const {
    return name == "main" ? child_.pid() : static_cast<pid_t>(std::stol(kv_.at(name)));
  }
  unsigned long long value(const std::string& key) const { return parse_number(kv_.at(key)); }
  std::string main_name() const { return task_comm(child_.pid(), child_.pid()); }
  // The key of kThreadExpect / expected_stacks() for a dumped thread name.
  std::string key_of(const std::string& name) const { return name == main_name() ? "main" : name; }

 private:
  std::string path_;
  Child child_;
  std::map<std::string, std::string> kv_;
  bool ready_ = false;
};

// Runs `profctl stack PID --format json ARGS`, expects exit 0, an untouched target that still
// answers, and returns the parsed, validated capture.
std::optional<Json> json_capture(StackTarget& target, std::vector<std::string> args = {}) {
  args.insert(args.begin(), {"--format", "json"});
  RunResult r = profctl_stack(target.pid(), args);
  EXPECT_FALSE(r.timed_out) << r.describe();
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(untouched(target.pid()));
  EXPECT_EQ(target.child().command("ping"), "pong") << "target does not answer after the dump";
  if (r.exit_code != 0) {
    return std::nullopt;
  }
  return parse_capture(r.out, target.pid());
}

struct Variant {
  const char* name;
  const char* path;
};

// Test names end in /cfi, /fp, /nopie; this keeps raw bytes out of ctest's names.
void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

class StackTargetTest : public ::testing::TestWithParam<Variant> {
 protected:
  void SetUp() override {
    PROFCTL_REQUIRE_PROFCTL();
    target_ = std::make_unique<StackTarget>(GetParam().path);
    ASSERT_TRUE(target_->ready()) << GetParam().path << " did not say ready";
    // The target says "ready" before its main thread blocks in read(): wait for that too,
    // so that every thread is in its expected state when a test dumps it.
    const pid_t main_tid = target_->tid("main");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (task_state(target_->pid(), main_tid) != 'S' &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  void TearDown() override { target_.reset(); }  // SIGKILL + waitpid by pid

  std::unique_ptr<StackTarget> target_;
};

TEST_P(StackTargetTest, EveryThreadHasItsExactStackStateAndWait) {
  // Let the spinner burn some CPU first, so that cpu_ns is well above a clock tick (10 ms).
  const pid_t spinner_tid = target_->tid("spinner");
  while (task_cpu_ns(target_->pid(), spinner_tid) < 100'000'000) {
    std::this_thread::sleep_for(milliseconds(10));
  }
  const long long cpu_before = task_cpu_ns(target_->pid(), spinner_tid);
  auto capture = json_capture(*target_);
  const long long cpu_after = task_cpu_ns(target_->pid(), spinner_tid);
  ASSERT_TRUE(capture);
  const Json& doc = *capture;
  const pid_t pid = target_->pid();

  EXPECT_EQ(canonical(doc["target"]["exe"].get<std::string>()), canonical(target_->path()));
  EXPECT_EQ(doc["target"]["cmdline"], Json::array({target_->path()}));

  // Exactly the threads /proc lists, with their names.
  std::set<pid_t> dumped;
  for (const Json& t : doc["threads"]) {
    dumped.insert(t["tid"].get<pid_t>());
  }
  auto tasks = task_ids(pid);
  EXPECT_EQ(dumped, std::set<pid_t>(tasks.begin(), tasks.end()));
  ASSERT_EQ(doc["threads"].size(), 7u);

  auto stacks = expected_stacks(/*with_inline=*/true);
  for (const std::string& key : kAllKeys) {
    SCOPED_TRACE("thread " + key);
    const Json* t = thread_by_tid(doc, target_->tid(key));
    ASSERT_NE(t, nullptr) << "tid " << target_->tid(key) << " missing";
    EXPECT_EQ((*t)["name"], key == "main" ? target_->main_name() : key);
    const Expected& e = kThreadExpect.at(key);
    EXPECT_EQ((*t)["state"], std::string(1, e.state));
    if (e.wait_syscall) {
      EXPECT_EQ(t->value("wait_syscall", Json()), e.wait_syscall);
    } else {
      EXPECT_TRUE(t->value("wait_syscall", Json()).is_null()) << t->value("wait_syscall", Json());
    }
    EXPECT_EQ((*t)["truncated"], false);
    EXPECT_TRUE(stack_matches(*t, target_->path(), stacks.at(key)));
  }

  // The spinner's CPU time, as /proc/PID/task/TID/schedstat said just before and after the dump;
  // 20 ms of slack below for a source counted in clock ticks (/proc stat utime+stime).
  const Json* spinner = thread_by_tid(doc, spinner_tid);
  const long long cpu_ns = spinner->value("cpu_ns", -1LL);
  EXPECT_GE(cpu_ns, cpu_before - 20'000'000) << "schedstat before the dump: " << cpu_before;
  EXPECT_LE(cpu_ns, cpu_after) << "schedstat after the dump: " << cpu_after;

  // Futex waits: the address is inside the object waited on, and is what the kernel says.
  for (const auto& [name, object] : std::vector<std::pair<std::string, std::string>>{
           {"condwait", "cond"}, {"mutexwait", "mutex"}}) {
    SCOPED_TRACE("thread " + name);
    const Json* t = thread_by_tid(doc, target_->tid(name));
    ASSERT_TRUE(t->value("wait_address", Json()).is_string());
    unsigned long long addr = parse_number((*t)["wait_address"].get<std::string>());
    unsigned long long lo = target_->value(object);
    unsigned long long size = target_->value(object + "_size");
    EXPECT_GE(addr, lo) << "wait_address below &" << object;
    EXPECT_LT(addr, lo + size) << "wait_address past &" << object << " + sizeof";
    auto kernel = blocked_syscall(target_->pid(), target_->tid(name));
    ASSERT_TRUE(kernel);
    EXPECT_EQ(addr, kernel->args[0]) << "/proc/PID/task/TID/syscall says otherwise";
  }
}

TEST_P(StackTargetTest, InlinedFrameComesBeforeItsCallerWithSourceLines) {
  auto capture = json_capture(*target_);
  ASSERT_TRUE(capture);
  const Json* t = thread_by_tid(*capture, target_->tid("recurser"));
  ASSERT_NE(t, nullptr);
  const Json& frames = (*t)["frames"];
  const std::string source = source_dir() + kSource;
  auto index_of = [&](const std::string& fn) -> size_t {
    for (size_t i = 0; i < frames.size(); ++i) {
      if (frames[i]["function"] == fn) {
        return i;
      }
    }
    return frames.size();
  };
  size_t inl = index_of("recurser_wait");
  ASSERT_LT(inl + 1, frames.size()) << describe_frames(*t);
  EXPECT_EQ(frames[inl]["inlined"], true);
  EXPECT_EQ(frames[inl + 1]["function"], "level_9");  // the frame it was inlined into, right after
  EXPECT_EQ(frames[inl + 1]["inlined"], false);

  for (const auto& [fn, marker] : std::vector<std::pair<std::string, std::string>>{
           {"recurser_wait", "// MARK:recurser_block_call"}, {"level_4", "// MARK:level_4_call"}}) {
    SCOPED_TRACE(fn);
    size_t at = index_of(fn);
    ASSERT_LT(at, frames.size()) << describe_frames(*t);
    const Json* f = &frames[at];
    int expected_line = marker_line(source, marker);
    ASSERT_GT(expected_line, 0);
    ASSERT_TRUE((*f)["file"].is_string()) << describe_frames(*t);
    EXPECT_EQ(std::filesystem::path((*f)["file"].get<std::string>()).filename(), "stack_target.c");
    EXPECT_EQ((*f)["line"], expected_line) << describe_frames(*t);
  }
}

TEST_P(StackTargetTest, NoInlineDropsInlinedFrames) {
  auto capture = json_capture(*target_, {"--no-inline"});
  ASSERT_TRUE(capture);
  for (const Json& t : (*capture)["threads"]) {
    for (const Json& f : t["frames"]) {
      EXPECT_EQ(f["inlined"], false) << "tid " << t["tid"] << "\n" << describe_frames(t);
    }
  }
  const Json* t = thread_by_tid(*capture, target_->tid("recurser"));
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(stack_matches(*t, target_->path(), expected_stacks(false).at("recurser")));
}

TEST_P(StackTargetTest, NoSourceGivesNullFileAndLine) {
  auto capture = json_capture(*target_, {"--no-source"});
  ASSERT_TRUE(capture);
  for (const Json& t : (*capture)["threads"]) {
    for (const Json& f : t["frames"]) {
      EXPECT_TRUE(f["file"].is_null() && f["line"].is_null()) << "tid " << t["tid"] << "\n"
                                                              << describe_frames(t);
    }
  }
  auto stacks = expected_stacks(false);
  for (const std::string& key : kThreadNames) {
    const Json* t = thread_by_tid(*capture, target_->tid(key));
    ASSERT_NE(t, nullptr) << key;
    EXPECT_TRUE(stack_matches(without_inlined(*t), target_->path(), stacks.at(key)));
  }
}

TEST_P(StackTargetTest, TidOptionSelectsThreads) {
  pid_t recurser = target_->tid("recurser");
  pid_t spinner = target_->tid("spinner");
  auto capture =
      json_capture(*target_, {"--tid", std::to_string(recurser), "--tid", std::to_string(spinner)});
  ASSERT_TRUE(capture);
  std::set<pid_t> dumped;
  for (const Json& t : (*capture)["threads"]) {
    dumped.insert(t["tid"].get<pid_t>());
  }
  EXPECT_EQ(dumped, (std::set<pid_t>{recurser, spinner}));
  auto stacks = expected_stacks(true);
  if (const Json* t = thread_by_tid(*capture, recurser)) {
    EXPECT_TRUE(stack_matches(*t, target_->path(), stacks.at("recurser")));
  }
  if (const Json* t = thread_by_tid(*capture, spinner)) {
    EXPECT_TRUE(stack_matches(*t, target_->path(), stacks.at("spinner")));
  }
}

// Text (the default): a header line per thread with tid, "name" and state, then its frames, one per
// line, in order.
TEST_P(StackTargetTest, TextFormatHasHeadersAndFramesInOrder) {
  RunResult r = profctl_stack(target_->pid());
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(untouched(target_->pid()));
  std::vector<std::string> lines;
  {
    std::istringstream in(r.out);
    for (std::string l; std::getline(in, l);) {
      lines.push_back(l);
    }
  }
  std::map<std::string, size_t> header;
  const std::map<char, std::string> state_words = {{'R', "running"}, {'S', "sleeping"}};
  for (const std::string& key : kAllKeys) {
    std::string name = key == "main" ? target_->main_name() : key;
    std::regex tid_re("(^|[^0-9])" + std::to_string(target_->tid(key)) + "([^0-9]|$)");
    auto it = std::find_if(lines.begin(), lines.end(), [&](const std::string& l) {
      return l.find("\"" + name + "\"") != std::string::npos && std::regex_search(l, tid_re);
    });
    ASSERT_NE(it, lines.end()) << "no header line with tid and \"" << name << "\"\n" << r.out;
    header[key] = static_cast<size_t>(it - lines.begin());
    std::string rest = *it;
    rest.erase(rest.find("\"" + name + "\""), name.size() + 2);
    char state = kThreadExpect.at(key).state;
    std::regex letter(std::string("(^|[^A-Za-z0-9])") + state + "([^A-Za-z0-9]|$)");
    EXPECT_TRUE(std::regex_search(rest, letter) ||
                rest.find(state_words.at(state)) != std::string::npos)
        << "state " << state << " not in header: " << *it;
  }
  // Frames of the recurser, in order, before the next header.
  size_t begin = header["recurser"];
  size_t end = lines.size();
  for (const auto& [key, at] : header) {
    if (at > begin && at < end) {
      end = at;
    }
  }
  std::vector<std::string> wanted = {"recurser_block", "recurser_wait"};
  for (int i = 9; i >= 0; --i) {
    wanted.push_back("level_" + std::to_string(i) + "");
  }
  wanted.push_back("recurser_main");
  size_t line = begin + 1;
  for (const std::string& fn : wanted) {
    std::regex word("(^|[^A-Za-z0-9_])" + fn + "([^A-Za-z0-9_]|$)");
    while (line < end && !std::regex_search(lines[line], word)) {
      ++line;
    }
    ASSERT_LT(line, end) << fn << " missing or out of order in the recurser's block:\n" << r.out;
    ++line;
  }
}

TEST_P(StackTargetTest, OutputFileGetsTheJson) {
  char path[] = "/tmp/profctl-out-XXXXXX.json";
  int fd = ::mkstemps(path, 5);
  ASSERT_GE(fd, 0);
  ::close(fd);
  RunResult r = profctl_stack(target_->pid(), {"--format", "json", "-o", path});
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  ::unlink(path);
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  EXPECT_TRUE(untouched(target_->pid()));
  auto capture = parse_capture(text.str(), target_->pid());
  ASSERT_TRUE(capture);
  EXPECT_EQ((*capture)["threads"].size(), 7u);
}

// -v logs to stderr only: stdout stays one valid JSON document. --debuginfod with DEBUGINFOD_URLS
// unset (as in every test) changes nothing and does not fail.
TEST_P(StackTargetTest, VerboseAndDebuginfodKeepStdoutClean) {
  for (const auto& option : {"-v", "--debuginfod"}) {
    SCOPED_TRACE(option);
    auto capture = json_capture(*target_, {option});
    ASSERT_TRUE(capture);
    EXPECT_EQ((*capture)["threads"].size(), 7u);
    const Json* t = thread_by_tid(*capture, target_->tid("recurser"));
    ASSERT_NE(t, nullptr);
    EXPECT_TRUE(stack_matches(*t, target_->path(), expected_stacks(true).at("recurser")));
  }
}

// A small stack copy may cut the unwind short: then the frames are a prefix of the full stack and
// the thread says truncated.
TEST_P(StackTargetTest, SmallStackBytesTruncates) {
  auto full = json_capture(*target_);
  auto small = json_capture(*target_, {"--stack-bytes", "128"});
  ASSERT_TRUE(full && small);
  const Json* f = thread_by_tid(*full, target_->tid("recurser"));
  const Json* s = thread_by_tid(*small, target_->tid("recurser"));
  ASSERT_TRUE(f && s);
  const Json& ff = (*f)["frames"];
  const Json& sf = (*s)["frames"];
  ASSERT_LE(sf.size(), ff.size());
  for (size_t i = 0; i < sf.size(); ++i) {
    EXPECT_EQ(sf[i]["pc"], ff[i]["pc"]) << "frame " << i;
    EXPECT_EQ(sf[i]["function"], ff[i]["function"]) << "frame " << i;
  }
  EXPECT_LT(sf.size(), ff.size()) << "128 bytes of stack should not reach 15 frames";
  if (sf.size() < ff.size()) {
    EXPECT_EQ((*s)["truncated"], true);
  }
}

INSTANTIATE_TEST_SUITE_P(Builds, StackTargetTest,
                         ::testing::Values(Variant{"cfi", TARGET_STACK_CFI},
                                           Variant{"fp", TARGET_STACK_FP},
                                           Variant{"nopie", TARGET_STACK_NOPIE}),
                         [](const auto& info) { return std::string(info.param.name); });

// The stripped copy: same code, no symbols, no DWARF. Frames in the executable have module = the
// stripped file, function/file/line null, the same offsets as the unstripped build, and the dump
// does not fail.
TEST(StackTargetStripped, ModuleAndOffsetWithoutSymbols) {
  PROFCTL_REQUIRE_PROFCTL();
  StackTarget plain(TARGET_STACK_CFI);
  StackTarget stripped(TARGET_STACK_STRIPPED);
  ASSERT_TRUE(plain.ready() && stripped.ready());
  auto a = json_capture(plain);
  auto b = json_capture(stripped);
  ASSERT_TRUE(a && b);
  ASSERT_EQ((*b)["threads"].size(), 7u);

  const Json* pt = thread_by_tid(*a, plain.tid("recurser"));
  const Json* st = thread_by_tid(*b, stripped.tid("recurser"));
  ASSERT_TRUE(pt && st);
  std::vector<Step> unknown_12(12, exe_unknown());
  EXPECT_TRUE(
      stack_matches(*st, stripped.path(), concat({{lib_run("pause")}, unknown_12, thread_tail()})));
  std::vector<std::string> plain_offsets, stripped_offsets;
  for (const Json& f : (*pt)["frames"]) {
    if (canonical(f["module"].get<std::string>()) == canonical(plain.path()) && !f["inlined"]) {
      plain_offsets.push_back(f["offset"].get<std::string>());
    }
  }
  for (const Json& f : (*st)["frames"]) {
    if (canonical(f["module"].get<std::string>()) == canonical(stripped.path())) {
      stripped_offsets.push_back(f["offset"].get<std::string>());
      EXPECT_TRUE(f["file"].is_null() && f["line"].is_null()) << describe_frames(*st);
    }
  }
  EXPECT_EQ(stripped_offsets, plain_offsets);

  // Every thread still unwinds to its end through .eh_frame.
  for (const std::string& key : kThreadNames) {
    const Json* t = thread_by_tid(*b, stripped.tid(key));
    ASSERT_NE(t, nullptr) << key;
    const Json& frames = (*t)["frames"];
    ASSERT_GE(frames.size(), 2u) << key;
    EXPECT_NE(frames.back()["function"].get<std::string>().find("clone"), std::string::npos)
        << key << "\n"
        << describe_frames(*t);
  }
}

// A group-stopped target (SIGSTOP) is dumped and stays stopped; SIGCONT resumes it.
TEST(StackTargetGroupStop, StoppedTargetStaysStopped) {
  PROFCTL_REQUIRE_PROFCTL();
  StackTarget target(TARGET_STACK_CFI);
  ASSERT_TRUE(target.ready());
  ASSERT_EQ(::kill(target.pid(), SIGSTOP), 0);  // our child, by pid
  ASSERT_TRUE(wait_all_tasks_in_state(target.pid(), 'T', milliseconds(10000)));

  RunResult r = profctl_stack(target.pid(), {"--format", "json"});
  ASSERT_EQ(r.exit_code, 0) << r.describe();
  auto capture = parse_capture(r.out, target.pid());
  ASSERT_TRUE(capture);
  EXPECT_EQ((*capture)["threads"].size(), 7u);
  for (const Json& t : (*capture)["threads"]) {
    EXPECT_EQ(t["state"], "T") << "tid " << t["tid"];
  }
  const Json* rec = thread_by_tid(*capture, target.tid("recurser"));
  ASSERT_NE(rec, nullptr);
  EXPECT_TRUE(stack_matches(*rec, target.path(), expected_stacks(true).at("recurser")));

  // Still stopped, a while later too, and not traced.
  std::this_thread::sleep_for(milliseconds(200));
  EXPECT_TRUE(untouched(target.pid(), 0, /*allow_group_stop=*/true));
  for (pid_t tid : task_ids(target.pid())) {
    EXPECT_EQ(task_state(target.pid(), tid), 'T') << "tid " << tid << " no longer stopped";
  }
  ASSERT_EQ(::kill(target.pid(), SIGCONT), 0);
  EXPECT_EQ(target.child().command("ping"), "pong");
  EXPECT_TRUE(untouched(target.pid()));
}

}  // namespace
}  // namespace profctl::testing
