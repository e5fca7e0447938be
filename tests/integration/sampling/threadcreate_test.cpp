// The threadcreate profile: one count per clone, with the creating thread's stack and tid, when
// attaching to a running process and when starting it with `profctl run`.
// Target: tests/targets/sampling/sampling_threadcreate.c (7 threads from create_from_alpha() on the
// main thread, 3 from create_from_beta() on "beta-creator").
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <set>
#include <sstream>

#include "sampling_support.h"
#include "support/procfs.h"

namespace profctl::testing::sampling {
namespace {

std::set<std::string> split_set(const std::string& list) {
  std::set<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    out.insert(item);
  }
  return out;
}

struct Creations {
  pid_t main_tid;
  std::string main_name;
  pid_t creator_tid;                 // beta-creator
  std::set<std::string> alpha_tids;  // tids of the threads created from create_from_alpha
  std::set<std::string> beta_tids;
  bool creator_created_in_capture;  // `run`: beta-creator's own creation is in the profile
};

// The threadcreate profile holds exactly the creations the target reported, each once, with the
// creator's stack, tid and name.
void expect_threadcreate(const Json& capture, const Creations& c) {
  const Json* p = profile_of(capture, "threadcreate");
  ASSERT_NE(p, nullptr) << "no threadcreate profile";
  const int count = value_index(*p, "threadcreate");
  ASSERT_GE(count, 0) << p->at("sample_types").dump();
  const std::string samples = describe_samples(*p, 40);

  auto alpha = [](const Json& s) { return has_function(s, "create_from_alpha"); };
  auto beta = [](const Json& s) { return has_function(s, "create_from_beta"); };
  auto starter = [](const Json& s) { return has_function(s, "start_beta_creator"); };
  const long long expected_total = 10 + (c.creator_created_in_capture ? 1 : 0);
  EXPECT_EQ(sum_values(*p, count), expected_total) << "threadcreate total\n" << samples;
  EXPECT_EQ(sum_values(*p, count, alpha), 7) << "creations under create_from_alpha\n" << samples;
  EXPECT_EQ(sum_values(*p, count, beta), 3) << "creations under create_from_beta\n" << samples;
  EXPECT_EQ(sum_values(*p, count, starter), c.creator_created_in_capture ? 1 : 0)
      << "creations under start_beta_creator\n"
      << samples;

  std::set<std::string> alpha_new, beta_new, starter_new;
  for (const Json& s : p->at("samples")) {
    SCOPED_TRACE("sample " + s.value("labels", Json::object()).dump());
    const int kinds = int(alpha(s)) + int(beta(s)) + int(starter(s));
    EXPECT_EQ(kinds, 1) << "a creation stack must contain exactly one of the creating functions\n"
                        << samples;
    const std::string new_tid = label(s, "new_tid");
    EXPECT_FALSE(new_tid.empty()) << "label new_tid missing";
    if (alpha(s) || starter(s)) {
      EXPECT_EQ(label(s, "tid"), std::to_string(c.main_tid)) << "creator tid (main thread)";
      EXPECT_EQ(label(s, "thread_name"), c.main_name);
    }
    if (beta(s)) {
      EXPECT_EQ(label(s, "tid"), std::to_string(c.creator_tid)) << "creator tid (beta-creator)";
      EXPECT_EQ(label(s, "thread_name"), "beta-creator");
    }
    // Each sample is one creation here (its new_tid makes it unique).
    const long long n = s.at("values").at(static_cast<size_t>(count)).get<long long>();
    EXPECT_EQ(n, 1) << "one creation per new_tid";
    (alpha(s) ? alpha_new : beta(s) ? beta_new : starter_new).insert(new_tid);
  }
  EXPECT_EQ(alpha_new, c.alpha_tids) << "new_tid of the create_from_alpha samples";
  EXPECT_EQ(beta_new, c.beta_tids) << "new_tid of the create_from_beta samples";
  if (c.creator_created_in_capture) {
    EXPECT_EQ(starter_new, std::set<std::string>{std::to_string(c.creator_tid)});
  }
}

TEST(SamplingThreadCreate, AttachCountsEachCreationWithTheCreatorsStackAndTid) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({SAMPLING_THREADCREATE});
  auto ready = target.wait_ready();
  ASSERT_TRUE(ready) << "sampling_threadcreate did not say ready";
  const pid_t creator = static_cast<pid_t>(std::stol(parse_key_values(*ready).at("creator")));
  const std::string main_name = task_comm(target.pid(), target.pid());

  TempDir dir;
  BgProcess profctl_run(
      attach_argv(target.pid(), {"--profiles", "threadcreate", "-o", dir.path()}));
  ASSERT_TRUE(wait_traced(target.pid())) << "profctl never attached: " << profctl_run.err();
  auto done = target.command("go");
  ASSERT_TRUE(done && done->rfind("done", 0) == 0) << "target: " << done.value_or("<no reply>");
  ASSERT_TRUE(profctl_run.signal(SIGINT));
  auto status = profctl_run.wait_exit(milliseconds(60000));
  ASSERT_TRUE(status) << "profctl attach did not end within 60 s of SIGINT\n" << profctl_run.err();
  EXPECT_EQ(exit_code_of(*status), 0) << profctl_run.describe_status() << "\n" << profctl_run.err();
  EXPECT_TRUE(untouched(target.pid()));

  auto kv = parse_key_values(*done);
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  expect_threadcreate(*capture, {target.pid(), main_name, creator, split_set(kv["alpha"]),
                                 split_set(kv["beta"]), false});
  EXPECT_TRUE(outputs_valid(dir.path(), {{"threadcreate", {"create_from_alpha"}}}));
  EXPECT_EQ(target.command("ping"), "pong") << "target does not answer after the capture";
}

TEST(SamplingThreadCreate, RunCountsCreationsFromTheFirstInstruction) {
  PROFCTL_REQUIRE_PROFCTL();
  TempDir dir;
  RunResult r = run(run_argv({"--profiles", "threadcreate", "-o", dir.path()},
                             {SAMPLING_THREADCREATE, "startup"}));
  ASSERT_FALSE(r.timed_out) << r.describe();
  EXPECT_EQ(r.exit_code, 0) << r.describe();
  auto nl = r.out.find("done ");
  ASSERT_NE(nl, std::string::npos) << "the program's done line is missing\n" << r.describe();
  auto kv = parse_key_values(r.out.substr(nl, r.out.find('\n', nl) - nl));
  const pid_t pid = static_cast<pid_t>(std::stol(kv.at("pid")));
  const pid_t creator = static_cast<pid_t>(std::stol(kv.at("creator")));

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  EXPECT_EQ(capture->at("target").value("pid", 0), pid);
  // Without modules nothing can be symbolized (every frame is "[unknown]", function null).
  EXPECT_FALSE(capture->value("modules", Json::array()).empty())
      << "capture.json of `profctl run` has no modules: the program's frames are not symbolized";
  expect_threadcreate(*capture, {pid, comm_of_exe(SAMPLING_THREADCREATE), creator,
                                 split_set(kv["alpha"]), split_set(kv["beta"]), true});
  EXPECT_TRUE(outputs_valid(dir.path(), {{"threadcreate", {"create_from_beta"}}}));
}

}  // namespace
}  // namespace profctl::testing::sampling
