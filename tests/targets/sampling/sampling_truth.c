// sampling_truth MODE:
//   work   two threads ("worker") each loop over work_fifty (5 units), work_thirty (3) and
//          work_twenty (2), reading CLOCK_MONOTONIC between units (a vDSO call: the place a
//          preempted thread resumes, which biased samples used to charge). The target
//          measures each function's own CPU time with CLOCK_THREAD_CPUTIME_ID around every
//          call: the truth the profile is checked against.
//          Commands on stdin: "truth" -> "fifty=NS thirty=NS twenty=NS" (sums over both
//          threads), "quit" / EOF -> exit.
//   hog    a CPU competitor with many wakeups: ~100 us of spinning, then a 50 us sleep,
//          for ever (as a busy server or a parallel build loads a machine).
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
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

NOINLINE void work_fifty(void) {
  for (int i = 0; i < 5; ++i) unit();
  KEEP_FRAME();
}
NOINLINE void work_thirty(void) {
  for (int i = 0; i < 3; ++i) unit();
  KEEP_FRAME();
}
NOINLINE void work_twenty(void) {
  for (int i = 0; i < 2; ++i) unit();
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

int main(int argc, char** argv) {
  sampling_die_with_parent();
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
  for (int i = 0; i < 2; ++i) pthread_create(&t, NULL, worker, NULL);
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
