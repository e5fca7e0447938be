// sampling_truth MODE [FACTOR]:
//   work   two threads ("worker") each loop over work_fifty (5 units), work_thirty (3) and
//          work_twenty (2), reading CLOCK_MONOTONIC between units (a vDSO call: the place a
//          preempted thread resumes, which biased samples used to charge). The target
//          measures each function's own CPU time with CLOCK_THREAD_CPUTIME_ID around every
//          call: the truth the profile is checked against.
//          Commands on stdin: "truth" -> "fifty=NS thirty=NS twenty=NS" (sums over both
//          threads), "quit" / EOF -> exit.
//   paced  one thread ("paced") that every 10 ms runs work_fifty (5 units), work_thirty (3)
//          and work_twenty (2), a unit being 300 us of its own CPU time, then sleeps until
//          the next period: a fixed amount of work per second (a server at a steady load),
//          so a function's CPU per second depends on its own cost only, not on how much
//          CPU the machine has to spare. Commands as for work.
//   hog    a CPU competitor with many wakeups: ~100 us of spinning, then a 50 us sleep,
//          for ever (as a busy server or a parallel build loads a machine).
// FACTOR (work, paced; default 1) multiplies work_fifty's units: "paced 2" is the same
// program with a regression of exactly twice the time in work_fifty (profctl diff's test).
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sampling_util.h"

static atomic_llong truth[3];
static volatile unsigned long sink;

static inline long long now_ns(clockid_t c) { return sampling_clock_ns(c); }

NOINLINE static void unit(void) {
  for (int i = 0; i < 20000; ++i) {
    sink += (unsigned long)i * 7u;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);  // between units, as real code reads clocks
  sink += (unsigned long)ts.tv_nsec;
}

// Spins until this thread has used `ns` more CPU time; the clock is read every few
// thousand iterations, so most samples land in the loop, not in clock_gettime.
NOINLINE static void paced_unit(void) {
  const long long end = now_ns(CLOCK_THREAD_CPUTIME_ID) + 300000;
  do {
    for (int i = 0; i < 5000; ++i) {
      sink += (unsigned long)i * 3u;
    }
  } while (now_ns(CLOCK_THREAD_CPUTIME_ID) < end);
}

static void (*unit_fn)(void) = unit;
static int fifty_factor = 1;

NOINLINE void work_fifty(void) {
  for (int i = 0; i < 5 * fifty_factor; ++i) unit_fn();
  KEEP_FRAME();
}
NOINLINE void work_thirty(void) {
  for (int i = 0; i < 3; ++i) unit_fn();
  KEEP_FRAME();
}
NOINLINE void work_twenty(void) {
  for (int i = 0; i < 2; ++i) unit_fn();
  KEEP_FRAME();
}

NOINLINE static void* worker(void* arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "worker");
  void (*fns[3])(void) = {work_fifty, work_thirty, work_twenty};
  for (;;) {
    for (int f = 0; f < 3; ++f) {
      long long t0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
      fns[f]();
      atomic_fetch_add(&truth[f], now_ns(CLOCK_THREAD_CPUTIME_ID) - t0);
    }
  }
  return NULL;
}

NOINLINE static void* paced(void* arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "paced");
  void (*fns[3])(void) = {work_fifty, work_thirty, work_twenty};
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  for (;;) {
    for (int f = 0; f < 3; ++f) {
      long long t0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
      fns[f]();
      atomic_fetch_add(&truth[f], now_ns(CLOCK_THREAD_CPUTIME_ID) - t0);
    }
    // Absolute deadlines: a late period is made up for, so the work per second is fixed.
    next.tv_nsec += 10000000;
    if (next.tv_nsec >= 1000000000) {
      next.tv_nsec -= 1000000000;
      next.tv_sec++;
    }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
  }
  return NULL;
}

int main(int argc, char** argv) {
  sampling_die_with_parent();
  if (argc > 2) {
    fifty_factor = atoi(argv[2]) > 0 ? atoi(argv[2]) : 1;
  }
  if (argc > 1 && strcmp(argv[1], "hog") == 0) {
    for (;;) {
      long long end = now_ns(CLOCK_MONOTONIC) + 100000;
      while (now_ns(CLOCK_MONOTONIC) < end) {
        sink++;
      }
      usleep(50);
    }
  }
  pthread_t t;
  if (argc > 1 && strcmp(argv[1], "paced") == 0) {
    unit_fn = paced_unit;
    pthread_create(&t, NULL, paced, NULL);
  } else {
    for (int i = 0; i < 2; ++i) pthread_create(&t, NULL, worker, NULL);
  }
  target_say("ready");
  struct target_lines in = {0};
  char line[128];
  while (target_next_line(&in, line, sizeof line) != NULL) {
    if (strcmp(line, "truth") == 0) {
      char out[160];
      snprintf(out, sizeof out, "fifty=%lld thirty=%lld twenty=%lld", atomic_load(&truth[0]),
               atomic_load(&truth[1]), atomic_load(&truth[2]));
      target_say(out);
    } else if (strcmp(line, "quit") == 0) {
      break;
    }
  }
  return 0;
}
