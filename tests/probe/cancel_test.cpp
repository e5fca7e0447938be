// SPDX-License-Identifier: MIT
// Unwinding out of a hijacked wait, in this very process: its own libc's futex wait and
// cancellation path (__pthread_unwind) and libgcc's unwinder entries are probed
// (LibcProbes), then a thread blocked in a probed wait is cancelled, or gets a signal whose
// handler throws. Every destructor and cleanup handler runs, the wait was hijacked when the
// unwind began (its stack held the code area's address), and the unwinder's probe undid it.
// Without the cancellation site a cancellable wait is not hijacked at all. Each test runs
// in its own process (gtest_discover_tests): a failure cannot leave libc patched.
#include <gtest/gtest.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "attach/proc.h"
#include "base/fd.h"
#include "probe/abi/probe_abi.h"
#include "probe/elf_symbols.h"
#include "tests/probe/libc_probes.h"

namespace profctl::probe {
namespace {

using testing::LibcProbes;
using testing::LibcSite;

constexpr long kSysFutex = 202;

// The probed functions: glibc's internal ones by their libc6-dbg names, libgcc's by theirs.
struct Sites {
  LibcSite wait;    // __futex_abstimed_wait_common
  LibcSite cancel;  // __pthread_unwind
  std::vector<LibcSite> unwinders;
};

LibcSite site(const std::string& name, uint32_t kind, uint64_t address, uint64_t size,
              uint32_t flags = 0) {
  LibcSite s;
  s.name = name;
  s.kind = kind;
  s.address = address;
  s.size = size;
  s.flags = flags;
  return s;
}

std::optional<Sites> find_sites(std::string& why) {
  auto maps = parse_maps(read_file("/proc/self/maps").value());
  std::string libc;
  std::string libgcc;
  for (const MapEntry& m : maps) {
    if (m.path.ends_with("/libc.so.6")) {
      libc = m.path;
    } else if (m.path.ends_with("/libgcc_s.so.1")) {
      libgcc = m.path;
    }
  }
  if (libc.empty() || libgcc.empty()) {
    why = "libc.so.6 or libgcc_s.so.1 is not mapped";
    return std::nullopt;
  }
  const std::vector<std::string> exported = {"__pthread_unwind_next"};
  auto syms = read_elf_functions(libc, exported);
  if (!syms) {
    why = syms.error().message();
    return std::nullopt;
  }
  auto bias = load_bias(*syms, maps, libc);
  const std::string dbg = debug_file_for_build_id(syms->build_id);
  if (!bias || dbg.empty()) {
    why = "no libc6-dbg file for this libc (a dependency)";
    return std::nullopt;
  }
  const std::vector<std::string> internal = {"__futex_abstimed_wait_common", "__pthread_unwind"};
  auto named = read_debug_functions(dbg, internal, *syms);
  if (!named || named->functions.size() != 2) {
    why = "libc6-dbg does not name __futex_abstimed_wait_common and __pthread_unwind";
    return std::nullopt;
  }
  Sites s;
  const ElfFunction& w = named->functions.at("__futex_abstimed_wait_common");
  const ElfFunction& u = named->functions.at("__pthread_unwind");
  s.wait = site("__futex_abstimed_wait_common", PROBE_KIND_BLOCK, *bias + w.value, w.size,
                PROBE_SITE_CANCELLABLE_ARG6);
  s.cancel = site("__pthread_unwind", PROBE_KIND_UNWIND, *bias + u.value, u.size,
                  PROBE_SITE_CANCEL_UNWIND);
  const std::vector<std::string> unwinders = {"_Unwind_RaiseException", "_Unwind_ForcedUnwind"};
  auto gcc = read_elf_functions(libgcc, unwinders);
  if (!gcc || gcc->functions.size() != 2) {
    why = "libgcc_s.so.1 has no _Unwind_RaiseException/_Unwind_ForcedUnwind";
    return std::nullopt;
  }
  auto gcc_bias = load_bias(*gcc, maps, libgcc);
  if (!gcc_bias) {
    why = "libgcc_s.so.1 has no _Unwind_RaiseException/_Unwind_ForcedUnwind";
    return std::nullopt;
  }
  for (const auto& [name, f] : gcc->functions) {
    s.unwinders.push_back(site(name, PROBE_KIND_UNWIND, *gcc_bias + f.value, f.size));
  }
  return s;
}

SharedAreaOptions wait_options() {
  SharedAreaOptions o;
  o.mem_rate = 0;
  o.block_rate_ticks = 1;  // every wait hijacked and recorded
  o.ring_bytes = 1 << 20;
  o.pointer_capacity = 1 << 10;
  o.prefault = false;
  o.owner_pid = getpid();
  return o;
}

const probe_counters& counters_of(LibcProbes& p) {
  return reinterpret_cast<const probe_ctl*>(p.area().data())->counters;
}

// The stack pointer of thread `tid` once it is blocked in a futex wait.
uint64_t futex_blocked_sp(pid_t tid) {
  const std::string path = "/proc/self/task/" + std::to_string(tid) + "/syscall";
  for (;;) {
    auto text = read_file(path);
    long nr = -1;
    unsigned long v[8] = {};
    if (text &&
        std::sscanf(text->c_str(), "%ld %lx %lx %lx %lx %lx %lx %lx", &nr, &v[0], &v[1], &v[2],
                    &v[3], &v[4], &v[5], &v[6]) == 8 &&
        nr == kSysFutex) {
      return v[6];
    }
    sched_yield();
  }
}

// Whether the waiting thread's stack, from its stack pointer up to `top` (an address in the
// function that called the wait), holds the code area's probe_wait_return: the hijacked
// return address. (Other code-area addresses can linger there: the entry stub's own return
// address from probe_enter, in slots the wait function has not written.)
bool hijacked(LibcProbes& p, pid_t tid, uint64_t top) {
  probe_blob_header h{};
  std::memcpy(&h, p.image().code.data(), sizeof h);
  const uint64_t wait_return = p.image().code_address + h.wait_return_offset;
  for (uint64_t at = futex_blocked_sp(tid) & ~7ULL; at + 8 <= top; at += 8) {
    if (*reinterpret_cast<const volatile uint64_t*>(at) == wait_return) {
      return true;
    }
  }
  return false;
}

// What the waiting threads did, reset per test.
std::atomic<int> g_destructors{0};
std::atomic<int> g_handlers{0};
std::atomic<int> g_caught{0};
std::atomic<pid_t> g_tid{0};
std::atomic<uint64_t> g_top{0};

class Guard {
 public:
  explicit Guard(std::mutex& m) : m_(m) { m_.lock(); }
  ~Guard() {
    m_.unlock();
    g_destructors.fetch_add(1);
  }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;

 private:
  std::mutex& m_;
};

void cleanup_handler(void* mutex) {
  pthread_mutex_unlock(static_cast<pthread_mutex_t*>(mutex));
  g_handlers.fetch_add(1);
}

void about_to_wait(volatile char* top) {
  g_top = reinterpret_cast<uint64_t>(top);
  g_tid = static_cast<pid_t>(syscall(SYS_gettid));
}

struct CondRound {
  std::mutex held;
  pthread_mutex_t handled = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
};

__attribute__((noinline)) void* cond_waiter(void* arg) {
  auto* r = static_cast<CondRound*>(arg);
  volatile char top = 0;
  Guard g(r->held);
  pthread_mutex_lock(&r->handled);
  pthread_cleanup_push(cleanup_handler, &r->handled);
  pthread_mutex_lock(&r->mu);
  pthread_cleanup_push(cleanup_handler, &r->mu);
  about_to_wait(&top);
  for (;;) {
    pthread_cond_wait(&r->cv, &r->mu);
  }
  pthread_cleanup_pop(1);
  pthread_cleanup_pop(1);
  return nullptr;
}

// Cancels `rounds` threads blocked in pthread_cond_wait; returns how many waits were
// hijacked when the cancellation came.
int cancel_cond_waits(LibcProbes& p, int rounds) {
  int hijacks = 0;
  for (int i = 0; i < rounds; ++i) {
    auto* r = new CondRound;  // leaked on failure: a broken round's condvar cannot be destroyed
    g_tid = 0;
    pthread_t t;
    EXPECT_EQ(pthread_create(&t, nullptr, cond_waiter, r), 0);
    while (g_tid.load() == 0) {
      sched_yield();
    }
    hijacks += hijacked(p, g_tid.load(), g_top.load());
    pthread_cancel(t);
    void* result = nullptr;
    pthread_join(t, &result);
    EXPECT_EQ(result, PTHREAD_CANCELED);
    EXPECT_TRUE(r->held.try_lock()) << "round " << i << ": the guard's destructor did not run";
    EXPECT_EQ(pthread_mutex_trylock(&r->handled), 0) << "round " << i;
    EXPECT_EQ(pthread_mutex_trylock(&r->mu), 0) << "round " << i;
  }
  return hijacks;
}

class ProbeCancel : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    sites_ = find_sites(why);
    ASSERT_TRUE(sites_) << why;
    g_destructors = 0;
    g_handlers = 0;
    g_caught = 0;
  }
  std::vector<LibcSite> all() const {
    std::vector<LibcSite> v = {sites_->wait, sites_->cancel};
    v.insert(v.end(), sites_->unwinders.begin(), sites_->unwinders.end());
    return v;
  }
  std::optional<Sites> sites_;
};

TEST_F(ProbeCancel, ACancelledConditionWaitRunsEveryDestructorAndCleanupHandler) {
  auto p = LibcProbes::install(all(), wait_options());
  ASSERT_TRUE(p) << p.error().message();
  for (const SitePatch& s : (*p)->image().sites) {
    ASSERT_EQ(s.method, PatchMethod::Jump) << s.reason;
  }
  (*p)->area().set_enabled(true);
  constexpr int kRounds = 10;
  const int hijacks = cancel_cond_waits(**p, kRounds);
  const probe_counters& k = counters_of(**p);
  const uint64_t unwound = k.waits_unwound;
  const uint64_t refused = k.waits_not_hijacked;
  (*p)->remove();
  EXPECT_EQ(hijacks, kRounds) << "the waits were not entered through the probe; seen "
                              << k.waits_seen << " not hijacked " << refused;
  EXPECT_EQ(unwound, static_cast<uint64_t>(kRounds));
  EXPECT_EQ(refused, 0u);
  EXPECT_EQ(g_destructors.load(), kRounds);
  EXPECT_EQ(g_handlers.load(), 2 * kRounds);
}

TEST_F(ProbeCancel, WithoutTheCancellationSiteACancellableWaitIsNotHijacked) {
  // Only the wait: no patch puts a return address back before glibc's forced unwind, so a
  // cancellation point's wait must be left alone, and the cancellation works as without
  // probes.
  std::vector<LibcSite> sites = {sites_->wait};
  auto p = LibcProbes::install(sites, wait_options());
  ASSERT_TRUE(p) << p.error().message();
  ASSERT_EQ((*p)->image().sites.at(0).method, PatchMethod::Jump);
  (*p)->area().set_enabled(true);
  constexpr int kRounds = 5;
  const int hijacks = cancel_cond_waits(**p, kRounds);
  const uint64_t refused = counters_of(**p).waits_not_hijacked;
  (*p)->remove();
  EXPECT_EQ(hijacks, 0);
  EXPECT_GE(refused, static_cast<uint64_t>(kRounds));
  EXPECT_EQ(g_destructors.load(), kRounds);
  EXPECT_EQ(g_handlers.load(), 2 * kRounds);
}

struct Interrupted {
  int signal;
};

void throw_on_signal(int sig) { throw Interrupted{sig}; }

struct SemRound {
  std::mutex held;
  sem_t sem{};
  bool register_bounds = false;
  LibcProbes* probes = nullptr;
};

__attribute__((noinline)) void* sem_waiter(void* arg) {
  auto* r = static_cast<SemRound*>(arg);
  if (r->register_bounds) {
    // The blob then reads and writes the hijacked word with plain loads and stores; without
    // bounds it goes through process_vm_readv/writev.
    pthread_attr_t attr;
    void* lo = nullptr;
    size_t size = 0;
    pthread_getattr_np(pthread_self(), &attr);
    pthread_attr_getstack(&attr, &lo, &size);
    pthread_attr_destroy(&attr);
    const auto base = reinterpret_cast<uint64_t>(lo);
    (void)r->probes->area().register_thread(static_cast<uint64_t>(pthread_self()), base,
                                            base + size, static_cast<pid_t>(syscall(SYS_gettid)));
  }
  volatile char top = 0;
  try {
    Guard g(r->held);
    about_to_wait(&top);
    for (;;) {
      sem_wait(&r->sem);
    }
  } catch (const Interrupted& e) {
    g_caught.fetch_add(e.signal == SIGUSR1 ? 1 : 0);
  }
  return nullptr;
}

TEST_F(ProbeCancel, AThrowFromASignalHandlerInAWaitIsCaughtAboveTheDestructor) {
  struct sigaction sa {};
  struct sigaction old {};
  sa.sa_handler = throw_on_signal;
  sigaction(SIGUSR1, &sa, &old);
  auto p = LibcProbes::install(all(), wait_options());
  ASSERT_TRUE(p) << p.error().message();
  (*p)->area().set_enabled(true);
  constexpr int kRounds = 10;
  int hijacks = 0;
  for (int i = 0; i < kRounds; ++i) {
    auto* r = new SemRound;
    sem_init(&r->sem, 0, 0);
    r->register_bounds = i % 2 == 0;
    r->probes = p->get();
    g_tid = 0;
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, nullptr, sem_waiter, r), 0);
    while (g_tid.load() == 0) {
      sched_yield();
    }
    hijacks += hijacked(**p, g_tid.load(), g_top.load());
    pthread_kill(t, SIGUSR1);
    pthread_join(t, nullptr);
    EXPECT_TRUE(r->held.try_lock()) << "round " << i;
    r->held.unlock();
  }
  const uint64_t unwound = counters_of(**p).waits_unwound;
  (*p)->remove();
  sigaction(SIGUSR1, &old, nullptr);
  EXPECT_EQ(hijacks, kRounds);
  EXPECT_EQ(unwound, static_cast<uint64_t>(kRounds));
  EXPECT_EQ(g_caught.load(), kRounds);
  EXPECT_EQ(g_destructors.load(), kRounds);
}

sigjmp_buf g_escape;

void jump_out(int) { siglongjmp(g_escape, 1); }

// A wait left by siglongjmp stays in the slot (its word is dead stack now). The next unwind
// forgets it without harm, and the thread's later waits are hijacked and undone as usual.
__attribute__((noinline)) void* leave_then_throw(void* arg) {
  auto* r = static_cast<SemRound*>(arg);
  volatile char top = 0;
  if (sigsetjmp(g_escape, 1) == 0) {
    about_to_wait(&top);
    for (;;) {
      sem_wait(&r->sem);
    }
  }
  try {
    Guard g(r->held);
    throw Interrupted{0};
  } catch (const Interrupted&) {
    g_caught.fetch_add(1);
  }
  sem_post(&r->sem);
  while (sem_wait(&r->sem) != 0) {
  }
  return nullptr;
}

TEST_F(ProbeCancel, AWaitLeftBySiglongjmpIsForgottenAtTheNextUnwind) {
  struct sigaction sa {};
  struct sigaction old {};
  sa.sa_handler = jump_out;
  sigaction(SIGUSR2, &sa, &old);
  auto p = LibcProbes::install(all(), wait_options());
  ASSERT_TRUE(p) << p.error().message();
  (*p)->area().set_enabled(true);
  auto* r = new SemRound;
  sem_init(&r->sem, 0, 0);
  g_tid = 0;
  pthread_t t;
  ASSERT_EQ(pthread_create(&t, nullptr, leave_then_throw, r), 0);
  while (g_tid.load() == 0) {
    sched_yield();
  }
  const bool was_hijacked = hijacked(**p, g_tid.load(), g_top.load());
  pthread_kill(t, SIGUSR2);
  pthread_join(t, nullptr);
  // The thread pointer is pthread_t's value: the slot's key.
  const bool still_waiting = (*p)->area().wait_of(static_cast<uint64_t>(t)).has_value();
  (*p)->remove();
  sigaction(SIGUSR2, &old, nullptr);
  EXPECT_TRUE(was_hijacked);
  EXPECT_EQ(g_caught.load(), 1);
  EXPECT_EQ(g_destructors.load(), 1);
  EXPECT_FALSE(still_waiting) << "the throw did not forget the wait left by siglongjmp";
}

}  // namespace
}  // namespace profctl::probe
