// SPDX-License-Identifier: MIT
// The threadcreate profile: one count per clone, with the creating thread's stack and tid, when
// attaching to a running process and when starting it with `profctl run`.
// Target: tests/targets/sampling/sampling_threadcreate.c (7 threads from create_from_alpha() on the
// main thread, 3 from create_from_beta() on "beta-creator").
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <set>
#include <sstream>
#include <thread>

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

// "stopped count=N" -> N, or -1.
long stopped_count(const std::optional<std::string>& reply) {
  if (!reply || reply->rfind("stopped count=", 0) != 0) {
    return -1;
  }
  return std::stol(reply->substr(14));
}

// Every thread of pid is traced by `tracer` (a seize is complete, not only the main thread's).
bool all_tasks_traced_by(pid_t pid, pid_t tracer) {
  for (pid_t tid : task_ids(pid)) {
    if (tracer_pid(pid, tid) != tracer) {
      return false;
    }
  }
  return true;
}

long long file_size(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<long long>(st.st_size) : -1;
}

// A target that creates threads as fast as it can (sampling_churn, paused while profctl seizes
// it, so that the target's own count of creations is exactly what profctl saw): the profile
// counts every creation, but keeps a row per creation only for the first 1000 (the documented
// detail cap) and one row per stack for the rest, so capture.json stays small.
TEST(SamplingThreadCreate, ChurnIsCountedPerStackWithBoundedDetail) {
  PROFCTL_REQUIRE_PROFCTL();
  constexpr long kDetailCap = 1000;
  Child target({SAMPLING_CHURN});
  ASSERT_TRUE(target.wait_ready()) << "sampling_churn did not say ready";
  const long from = stopped_count(target.command("stop"));
  ASSERT_GE(from, 0);

  TempDir dir;
  BgProcess profctl_run(
      attach_argv(target.pid(), {"--profiles", "threadcreate", "-o", dir.path()}));
  ASSERT_TRUE(wait_until([&] { return all_tasks_traced_by(target.pid(), profctl_run.pid()); },
                         milliseconds(30000)))
      << "profctl never seized every thread: " << describe_tasks(target.pid()) << "\n"
      << profctl_run.err();
  ASSERT_EQ(target.command("resume"), "resumed");
  // A capture window of churn, not a wait for readiness.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const long to = stopped_count(target.command("stop", milliseconds(20000)));
  ASSERT_GE(to, 0) << "the churners did not pause: " << describe_tasks(target.pid());
  const long created = to - from;
  ASSERT_TRUE(wait_until([&] { return catches(profctl_run.pid(), SIGINT); }, milliseconds(30000)));
  ASSERT_TRUE(profctl_run.signal(SIGINT));
  auto status = profctl_run.wait_exit(milliseconds(60000));
  ASSERT_TRUE(status) << "profctl attach did not end within 60 s of SIGINT\n" << profctl_run.err();
  EXPECT_EQ(exit_code_of(*status), 0) << profctl_run.describe_status() << "\n" << profctl_run.err();
  EXPECT_TRUE(untouched(target.pid()));
  ASSERT_GT(created, 2 * kDetailCap) << "the target hardly created threads while traced";

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* p = profile_of(*capture, "threadcreate");
  ASSERT_NE(p, nullptr);
  const int count = value_index(*p, "threadcreate");
  const long long total = sum_values(*p, count);
  const long long dropped = p->value("dropped", 0LL);
  // Exact: every creation is counted, or counted as dropped (and then said so).
  EXPECT_EQ(total + dropped, created)
      << "threadcreate total " << total << " + dropped " << dropped << " vs the target's count";
  EXPECT_LE(dropped, created / 10) << "unwinding fell far behind";
  size_t labelled = 0;
  std::set<std::string> unlabelled_stacks;
  for (const Json& s : p->at("samples")) {
    if (label(s, "new_tid").empty()) {
      EXPECT_TRUE(unlabelled_stacks.insert(s.at("frames").dump()).second)
          << "two unlabelled rows for one stack";
    } else {
      ++labelled;
    }
    EXPECT_TRUE(has_function(s, "churn_create_one")) << s.dump();
  }
  EXPECT_EQ(labelled, static_cast<size_t>(kDetailCap)) << "rows with per-creation detail";
  EXPECT_LE(unlabelled_stacks.size(), 4u) << "rows past the detail cap are one per stack";
  EXPECT_EQ(p->value("detail_omitted", 0LL), total - kDetailCap);
  // 1000 detailed rows of ~8 symbolized frames each: a few MB, whatever the creation rate.
  const long long json_bytes = file_size(dir.file("capture.json"));
  EXPECT_GT(json_bytes, 0);
  EXPECT_LT(json_bytes, 8LL << 20) << "capture.json for " << created << " creations";
  auto text = read_text(dir.file("threadcreate.txt"));
  ASSERT_TRUE(text);
  EXPECT_NE(text->find("detail: " + std::to_string(total - kDetailCap) + " events"),
            std::string::npos)
      << *text;
  EXPECT_TRUE(outputs_valid(dir.path(), {{"threadcreate", {"churn_create_one"}}}));
  EXPECT_EQ(target.command("resume"), "resumed");
}

}  // namespace
}  // namespace profctl::testing::sampling
