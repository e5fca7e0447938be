// SPDX-License-Identifier: MIT
// The block and mutex profiles on real processes (target: wait_target.c, which measures its
// own waits): each futex-based wait counted exactly with its delay; contended locking named
// with its function and lock; uncontended locking leaves no trace; a thread blocked across
// the end of the capture is shown waiting, and returns correctly after profctl is gone.
#include <gtest/gtest.h>
#include <signal.h>

#include <cmath>
#include <regex>
#include <sstream>

#include "sampling_support.h"
#include "support/procfs.h"

namespace profctl::testing::sampling {
namespace {

// "done cond waited_ns=123" -> 123 (the value after `key=`).
long long field(const std::string& reply, const std::string& key) {
  auto at = reply.find(key + "=");
  return at == std::string::npos ? -1 : std::stoll(reply.substr(at + key.size() + 1));
}

// A wait to take the mutex again (inside pthread_cond_wait, or a helper's lock) is a lock
// wait, not the wait the target measured.
bool is_lock_wait(const Json& sample) {
  for (const Json& f : sample.at("frames")) {
    const std::string fn = f.value("function", "");
    if (fn.find("lll_lock_wait") != std::string::npos ||
        fn.find("mutex_cond_lock") != std::string::npos ||
        fn.find("pthread_mutex_lock") != std::string::npos) {
      return true;
    }
  }
  return false;
}

struct Totals {
  long long count = 0;
  long long delay_ns = 0;
  size_t samples = 0;
};

bool has_frame_containing(const Json& sample, const std::string& part) {
  for (const Json& f : sample.at("frames")) {
    if (f.value("function", "").find(part) != std::string::npos) {
      return true;
    }
  }
  return false;
}

// The waits of `function` (through a frame whose name contains `via`, when given: the
// condition wait, not the join of the helper thread that follows it).
Totals totals_of(const Json& profile, const std::string& function, bool lock_waits,
                 const std::string& via = "") {
  Totals t;
  const int ci = value_index(profile, "contentions");
  const int di = value_index(profile, "delay");
  for (const Json& s : profile.at("samples")) {
    if (has_function(s, function) && is_lock_wait(s) == lock_waits &&
        (via.empty() || has_frame_containing(s, via))) {
      t.count += s.at("values").at(ci).get<long long>();
      t.delay_ns += s.at("values").at(di).get<long long>();
      ++t.samples;
    }
  }
  return t;
}

TEST(Block, EachConditionSemaphoreAndJoinWaitIsCountedWithItsDelay) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({WAIT_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(target.pid(),
                          {"--profiles", "block", "--block-rate", "1", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  const std::string cond = target.command("cond 5 80", milliseconds(30000)).value_or("(no reply)");
  const std::string sem = target.command("sem 4 80", milliseconds(30000)).value_or("(no reply)");
  const std::string join = target.command("join 3 80", milliseconds(30000)).value_or("(no reply)");
  const std::string barrier =
      target.command("barrier 3 80", milliseconds(30000)).value_or("(no reply)");
  ASSERT_EQ(cond.rfind("done cond", 0), 0u) << cond;
  ASSERT_EQ(sem.rfind("done sem", 0), 0u) << sem;
  ASSERT_EQ(join.rfind("done join", 0), 0u) << join;
  ASSERT_EQ(barrier.rfind("done barrier", 0), 0u) << barrier;
  end_with_sigint(p);

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* block = profile_of(*capture, "block");
  ASSERT_NE(block, nullptr) << capture->dump().substr(0, 2000);
  struct Expect {
    const char* function;
    const char* via;  // the primitive's glibc function
    long long count;
    long long waited_ns;
  };
  for (const Expect& e :
       {Expect{"wait_on_cond", "pthread_cond_wait", 5, field(cond, "waited_ns")},
        Expect{"wait_on_sem", "sem_wait", 4, field(sem, "waited_ns")},
        Expect{"wait_on_join", "clockjoin", 3, field(join, "waited_ns")},
        Expect{"wait_on_barrier", "pthread_barrier_wait", 3, field(barrier, "waited_ns")}}) {
    SCOPED_TRACE(e.function);
    const Totals t = totals_of(*block, e.function, false, e.via);
    EXPECT_EQ(t.count, e.count) << describe_samples(*block);
    // The target measured from just before the call to just after: the futex wait is
    // inside that, and all but a few microseconds of it.
    EXPECT_GE(t.delay_ns, e.waited_ns * 9 / 10) << describe_samples(*block);
    EXPECT_LE(t.delay_ns, e.waited_ns * 11 / 10) << describe_samples(*block);
    for (const Json& s : block->at("samples")) {
      if (has_function(s, e.function) && !is_lock_wait(s) && has_frame_containing(s, e.via)) {
        EXPECT_TRUE(stack_ends_with(s, then({e.function}, main_root())));
      }
    }
  }
  EXPECT_TRUE(outputs_valid(dir.path(), {{"block", {"wait_on_cond", "wait_on_sem"}}}));
}

TEST(Mutex, ContendedLockingIsChargedToTheWaitingFunctionAndItsLock) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({WAIT_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(
      target.pid(), {"--profiles", "mutex,block", "--block-rate", "1", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  const std::string reply =
      target.command("mutex 4 150 200", milliseconds(60000)).value_or("(no reply)");
  ASSERT_EQ(reply.rfind("done mutex", 0), 0u) << reply;
  ASSERT_EQ(target.command("rwlock 4 100 200", milliseconds(60000)), "done rwlock");
  end_with_sigint(p);
  const long long waited = field(reply, "waited_ns");
  const long long slow = field(reply, "slow");
  ASSERT_GT(slow, 100) << "the workload did not contend: " << reply;

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* mutex = profile_of(*capture, "mutex");
  ASSERT_NE(mutex, nullptr);
  const Totals t = totals_of(*mutex, "contend_mutex", true);
  // Every lock call that took over 20 us waited in the kernel; no more waits than calls.
  EXPECT_GE(t.count, slow * 9 / 10) << reply << "\n" << describe_samples(*mutex);
  EXPECT_LE(t.count, 4 * 150) << reply;
  // The contended calls' time is the kernel wait; the uncontended ones add next to nothing.
  EXPECT_GE(t.delay_ns, waited * 8 / 10) << reply << "\n" << describe_samples(*mutex);
  EXPECT_LE(t.delay_ns, waited * 105 / 100) << reply << "\n" << describe_samples(*mutex);
  // Charged to the waiter's whole stack, and to the lock: every sample names g_queue_mutex's
  // address, and the text report names the lock.
  for (const Json& s : mutex->at("samples")) {
    if (has_function(s, "contend_mutex")) {
      EXPECT_TRUE(stack_ends_with(s, then({"contend_mutex"}, thread_root())));
      EXPECT_FALSE(label(s, "lock").empty());
    }
  }
  // A writer waiting for an rwlock is a lock contention too (a futex wait under
  // pthread_rwlock_wrlock).
  const Json* blocked = profile_of(*capture, "block");
  ASSERT_NE(blocked, nullptr);
  EXPECT_GT(totals_of(*blocked, "contend_rwlock", false).count, 0)
      << "the writers never waited: " << describe_samples(*blocked);
  for (const Json* prof : {mutex, blocked}) {
    for (const Json& s : prof->at("samples")) {
      if (has_function(s, "contend_rwlock")) {
        EXPECT_TRUE(stack_ends_with(s, then({"contend_rwlock"}, thread_root())));
      }
    }
  }
  EXPECT_EQ(totals_of(*mutex, "contend_rwlock", false).count,
            totals_of(*blocked, "contend_rwlock", false).count)
      << describe_samples(*mutex) << "\n"
      << describe_samples(*blocked);
  auto text = read_text(dir.file("mutex.txt"));
  ASSERT_TRUE(text);
  EXPECT_NE(text->find("g_queue_mutex"), std::string::npos) << *text;
  // The same waits are in the block profile (Go counts lock waits as blocking too).
  const Json* block = profile_of(*capture, "block");
  ASSERT_NE(block, nullptr);
  EXPECT_EQ(totals_of(*block, "contend_mutex", true).count, t.count);
  // Go's side: the same contentions charged to the stack that released the lock to each
  // waiter (contend_mutex's unlock), with the same total delay.
  const Json* holders = profile_of(*capture, "mutex_holders");
  ASSERT_NE(holders, nullptr);
  const Totals h = totals_of(*holders, "contend_mutex", false, "unlock");
  EXPECT_EQ(h.count, t.count) << describe_samples(*holders);
  EXPECT_EQ(h.delay_ns, t.delay_ns) << describe_samples(*holders);
  for (const Json& s : holders->at("samples")) {
    if (has_function(s, "contend_mutex")) {
      EXPECT_TRUE(stack_ends_with(s, then({"contend_mutex"}, thread_root())));
    }
  }
  auto htext = read_text(dir.file("mutex_holders.txt"));
  ASSERT_TRUE(htext);
  EXPECT_NE(htext->find("side: holders"), std::string::npos) << *htext;
  EXPECT_TRUE(outputs_valid(dir.path(),
                            {{"mutex", {"contend_mutex"}}, {"mutex_holders", {"contend_mutex"}}}));
}

// --mutex-fraction is decided in the target, before anything is recorded: at 100, 1 in 100
// contended waits and only the releases that can end them cost a record (before, every
// release did: ~1 record per contention), so a 64 KiB ring loses nothing, and the profile's
// contentions (the records times the fraction, weighed once) estimate the target's own
// count of contended lock calls.
TEST(Mutex, AHighFractionRecordsBeforeTheRingAndLosesNothing) {
  PROFCTL_REQUIRE_PROFCTL();
  constexpr long long kFraction = 100;
  Child target({WAIT_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(target.pid(), {"--profiles", "mutex", "--mutex-fraction",
                                         std::to_string(kFraction), "--probe-ring-bytes", "64K",
                                         "--probe-stack-bytes", "1K", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  const std::string reply =
      target.command("trymutex 4 8000 0", milliseconds(120000)).value_or("(no reply)");
  ASSERT_EQ(reply.rfind("done trymutex", 0), 0u) << reply;
  end_with_sigint(p);
  const std::string err = p.err();
  const long long contended = field(reply, "contended");
  ASSERT_GT(contended, 5000) << "the workload did not contend: " << reply;

  EXPECT_EQ(err.find("mutex: partial"), std::string::npos) << err;
  // What the probes wrote (waits and releases; -v's probe summary): about 1 in 100 waits,
  // each with the few releases of its lock while it waited, not a release per contention.
  std::smatch m;
  const std::regex written("waits ([0-9]+) seen ([0-9]+) recorded");
  ASSERT_TRUE(std::regex_search(err, m, written)) << err;
  EXPECT_LT(std::stoll(m[2]) * 10, contended) << m[0] << "; " << reply;
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* mutex = profile_of(*capture, "mutex");
  ASSERT_NE(mutex, nullptr);
  EXPECT_EQ(mutex->value("dropped", -1LL), 0) << mutex->value("loss", Json()).dump();
  EXPECT_EQ(mutex->value("period", 0LL), kFraction);
  const Totals t = totals_of(*mutex, "contend_counted", true);
  // Each recorded wait stands for kFraction (a binomial draw: sd = sqrt(C (N - 1))); a try
  // that failed just before the holder let go took the fast path, so the target's count
  // may exceed the real one by a little.
  const double sd = std::sqrt(static_cast<double>(contended) * (kFraction - 1));
  EXPECT_NEAR(static_cast<double>(t.count), static_cast<double>(contended),
              4.5 * sd + 0.05 * static_cast<double>(contended))
      << reply << "\n"
      << describe_samples(*mutex);
  EXPECT_EQ(t.count % kFraction, 0) << "weighed more than once, or not by the fraction";
  // The releases that ended the recorded waits were recorded with them.
  const Json* holders = profile_of(*capture, "mutex_holders");
  ASSERT_NE(holders, nullptr) << err;
  const Totals h = totals_of(*holders, "contend_counted", false, "unlock");
  EXPECT_GE(h.count, t.count * 9 / 10) << describe_samples(*holders);
  EXPECT_LE(h.count, t.count) << describe_samples(*holders);
}

TEST(Mutex, ALockInAHeapObjectIsNamedByTheFunctionThatAllocatedIt) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({WAIT_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(target.pid(),
                          {"--profiles", "heap,mutex", "--mem-rate", "1", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  ASSERT_EQ(target.command("heapmutex 3 60 200", milliseconds(60000)), "done heapmutex");
  end_with_sigint(p);
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  const Json* mutex = profile_of(*capture, "mutex");
  ASSERT_NE(mutex, nullptr);
  ASSERT_GT(totals_of(*mutex, "contend_heap_mutex", true).count, 0) << describe_samples(*mutex);
  for (const Json& s : mutex->at("samples")) {
    if (has_function(s, "contend_heap_mutex")) {
      EXPECT_TRUE(stack_ends_with(s, then({"contend_heap_mutex"}, thread_root())));
      EXPECT_EQ(label(s, "lock_name"), "heap object allocated in make_shared_lock");
    }
  }
  auto text = read_text(dir.file("mutex.txt"));
  ASSERT_TRUE(text);
  EXPECT_NE(text->find("(heap object allocated in make_shared_lock)"), std::string::npos) << *text;
}

TEST(Mutex, UncontendedLockingRecordsNothing) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({WAIT_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(attach_argv(
      target.pid(), {"--profiles", "mutex,block", "--block-rate", "1", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  const std::string reply =
      target.command("lonely 2000000", milliseconds(60000)).value_or("(no reply)");
  ASSERT_EQ(reply.rfind("done lonely", 0), 0u) << reply;
  end_with_sigint(p);
  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  for (const char* kind : {"mutex", "block"}) {
    const Json* prof = profile_of(*capture, kind);
    ASSERT_NE(prof, nullptr) << kind;
    for (const Json& s : prof->at("samples")) {
      EXPECT_FALSE(has_function(s, "lonely_lock")) << kind << ": " << describe_samples(*prof);
    }
  }
}

TEST(Block, AThreadWaitingAcrossTheEndIsShownWaitingAndReturnsCorrectlyAfterwards) {
  PROFCTL_REQUIRE_PROFCTL();
  Child target({WAIT_TARGET});
  ASSERT_TRUE(target.wait_ready());
  TempDir dir;
  BgProcess p(
      attach_argv(target.pid(), {"--profiles", "block,mutex,threads", "-v", "-o", dir.path()}));
  start_and_wait_for_probes(target, p);
  // The thread starts waiting under the probes (its return address is the probe's) and is
  // still waiting when the capture ends.
  ASSERT_EQ(target.command("hang"), "done hang");
  std::this_thread::sleep_for(milliseconds(300));
  end_with_sigint(p);
  EXPECT_FALSE(probes_in(target.pid())) << "a probe mapping is left";
  // Its wait returns to its real caller: a return into the unmapped probe area would kill
  // the target.
  EXPECT_EQ(target.command("wake"), "done wake n=1") << describe_tasks(target.pid());
  EXPECT_EQ(target.command("cond 1 10").value_or("").rfind("done cond", 0), 0u);

  auto capture = load_capture(dir.path());
  ASSERT_TRUE(capture);
  bool found = false;
  for (const Json& t : capture->at("threads")) {
    bool in_forever = false;
    for (const Json& f : t.at("frames")) {
      in_forever = in_forever || f.value("function", "") == "block_forever";
    }
    if (!in_forever) {
      continue;
    }
    found = true;
    ASSERT_TRUE(t.contains("waiting_ns")) << t.dump();
    EXPECT_GE(t.at("waiting_ns").get<long long>(), 250'000'000LL) << t.dump();
    EXPECT_FALSE(t.value("truncated", true)) << "the stack stops at the probe: " << t.dump();
  }
  EXPECT_TRUE(found) << "no thread in block_forever: " << capture->at("threads").dump();
  auto stacks = read_text(dir.file("stacks.txt"));
  if (stacks) {
    EXPECT_NE(stacks->find("waiting "), std::string::npos) << *stacks;
  }
}

}  // namespace
}  // namespace profctl::testing::sampling
