// SPDX-License-Identifier: MIT
// cancel_target_cxx: C++ threads leaving a futex wait by unwinding, each holding a RAII guard
// whose destructor counts itself and unlocks the guard's mutex. Built with
// -fasynchronous-unwind-tables -fnon-call-exceptions: a signal handler may throw.
// Protocol: "ready pid=P" on stdout; commands on stdin, one line each:
//   cond N | sem N | join N -> N rounds of pthread_cancel of a thread blocked in
//     std::condition_variable::wait, sem_wait or std::thread::join, as in cancel_target.c:
//     "done KIND rounds=N hijacked=H destructors=K/E unlocked=U cancelled=C joined=J"
//     (cond: a guard plus the std::unique_lock of the condition's mutex, both must be
//     released; join: J counts the joined threads main could still join afterwards).
//   throw N -> N rounds: a thread blocked in sem_wait inside a try block, under a guard, gets
//     SIGUSR1, whose handler throws; the catch block counts it:
//     "done throw rounds=N hijacked=H destructors=K/N unlocked=U caught=C"
//   quit / EOF -> exit 0
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>

#include "cancel_util.h"

namespace {

std::atomic<int> g_destructors{0};
std::atomic<int> g_caught{0};

// Holds a mutex for its scope; its destructor is what an unwind must not skip.
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

struct Interrupted {
  int signal;
};

enum class Kind { Cond, Sem, Join, Throw };

struct Round {
  std::mutex held;
  std::mutex cmu;
  std::condition_variable cv;
  sem_t sem{};
  sem_t go{};
  std::thread helper;
  std::atomic<int> tid{0};
  uintptr_t top = 0;
  Kind kind = Kind::Cond;
};

void about_to_wait(Round& r, volatile char* top) {
  r.top = reinterpret_cast<uintptr_t>(top);
  r.tid.store(cancel_gettid(), std::memory_order_release);
}

// A scope guard that is only destroyed by an unwind: the condition's lock must be released
// too (the cancelled wait took it again first).
CANCEL_NOINLINE void cond_waiter(Round& r) {
  volatile char top = 0;
  Guard g(r.held);
  std::unique_lock<std::mutex> lock(r.cmu);
  about_to_wait(r, &top);
  for (;;) {
    r.cv.wait(lock);
  }
}

CANCEL_NOINLINE void sem_waiter(Round& r) {
  volatile char top = 0;
  Guard g(r.held);
  about_to_wait(r, &top);
  for (;;) {
    sem_wait(&r.sem);
  }
}

CANCEL_NOINLINE void join_waiter(Round& r) {
  volatile char top = 0;
  Guard g(r.held);
  about_to_wait(r, &top);
  r.helper.join();
}

CANCEL_NOINLINE void throw_waiter(Round& r) {
  volatile char top = 0;
  try {
    Guard g(r.held);
    about_to_wait(r, &top);
    for (;;) {
      sem_wait(&r.sem);
    }
  } catch (const Interrupted& e) {
    g_caught.fetch_add(e.signal == SIGUSR1 ? 1 : 0);
  }
}

void* waiter(void* arg) {
  Round& r = *static_cast<Round*>(arg);
  switch (r.kind) {
    case Kind::Cond:
      cond_waiter(r);
      break;
    case Kind::Sem:
      sem_waiter(r);
      break;
    case Kind::Join:
      join_waiter(r);
      break;
    case Kind::Throw:
      throw_waiter(r);
      break;
  }
  return nullptr;
}

void on_sigusr1(int sig) { throw Interrupted{sig}; }

std::string run_rounds(Kind kind, int n) {
  static const char* const names[] = {"cond", "sem", "join", "throw"};
  const int per_round = 1;
  int hijacked = 0;
  int unlocked = 0;
  int cancelled = 0;
  int joined = 0;
  g_destructors = 0;
  g_caught = 0;
  for (int i = 0; i < n; ++i) {
    // Never freed: a round whose unwind went wrong leaves objects nobody may destroy.
    auto* r = new Round;
    r->kind = kind;
    sem_init(&r->sem, 0, 0);
    sem_init(&r->go, 0, 0);
    if (kind == Kind::Join) {
      r->helper = std::thread([r] {
        while (sem_wait(&r->go) != 0) {
        }
      });
    }
    pthread_t t;
    pthread_create(&t, nullptr, waiter, r);
    int tid;
    while ((tid = r->tid.load(std::memory_order_acquire)) == 0) {
      sched_yield();
    }
    hijacked += cancel_wait_hijacked(tid, r->top);
    if (kind == Kind::Throw) {
      pthread_kill(t, SIGUSR1);
    } else {
      pthread_cancel(t);
    }
    void* result = nullptr;
    pthread_join(t, &result);
    cancelled += result == PTHREAD_CANCELED;
    bool free_now = r->held.try_lock();
    if (kind == Kind::Cond) {
      free_now = r->cmu.try_lock() && free_now;
    }
    unlocked += free_now;
    if (kind == Kind::Join) {
      sem_post(&r->go);
      try {
        r->helper.join();  // fails if the cancelled join left the thread claimed
        joined++;
      } catch (const std::system_error&) {
      }
    } else {
      joined++;
    }
  }
  char out[200];
  if (kind == Kind::Throw) {
    std::snprintf(out, sizeof out,
                  "done throw rounds=%d hijacked=%d destructors=%d/%d unlocked=%d caught=%d", n,
                  hijacked, g_destructors.load(), n, unlocked, g_caught.load());
  } else {
    std::snprintf(out, sizeof out,
                  "done %s rounds=%d hijacked=%d destructors=%d/%d unlocked=%d cancelled=%d "
                  "joined=%d",
                  names[static_cast<int>(kind)], n, hijacked, g_destructors.load(), n * per_round,
                  unlocked, cancelled, joined);
  }
  return out;
}

}  // namespace

int main() {
  cancel_die_with_parent();
  struct sigaction sa {};
  sa.sa_handler = on_sigusr1;
  sigaction(SIGUSR1, &sa, nullptr);
  char ready[64];
  std::snprintf(ready, sizeof ready, "ready pid=%d", static_cast<int>(getpid()));
  cancel_say(ready);
  std::string text;
  while (std::getline(std::cin, text)) {
    const char* line = text.c_str();
    int n = 0;
    std::string out = "unknown command";
    if (std::sscanf(line, "cond %d", &n) == 1) {
      out = run_rounds(Kind::Cond, n);
    } else if (std::sscanf(line, "sem %d", &n) == 1) {
      out = run_rounds(Kind::Sem, n);
    } else if (std::sscanf(line, "join %d", &n) == 1) {
      out = run_rounds(Kind::Join, n);
    } else if (std::sscanf(line, "throw %d", &n) == 1) {
      out = run_rounds(Kind::Throw, n);
    } else if (std::strcmp(line, "quit") == 0) {
      break;
    }
    cancel_say(out.c_str());
  }
  return 0;
}
