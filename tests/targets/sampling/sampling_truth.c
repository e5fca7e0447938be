// SPDX-License-Identifier: MIT
// sampling_truth MODE [FACTOR] [LOOPS|Nms]:
//   work [N] two threads ("worker") each loop over work_fifty (5 units), work_thirty (3) and
//          work_twenty (2), reading CLOCK_MONOTONIC between units (a vDSO call: the place a
//          preempted thread resumes, which biased samples used to charge). The target
//          measures each function's own CPU time with CLOCK_THREAD_CPUTIME_ID around every
//          call: the truth the profile is checked against.
//          Commands on stdin: "truth" -> "fifty=NS thirty=NS twenty=NS cpu=NS" (sums over
//          both threads; cpu is their whole CPU time, read from their thread CPU clocks),
//          "quit" / EOF -> exit.
//   batch  the two workers each run LOOPS (default 3000) loops of work, or whole loops until
//          each has used N ms of CPU time when the argument is "Nms", then the program exits:
//          a job with fixed work, whose functions' shares do not depend on how long it ran or
//          how busy the machine was. "Nms" also fixes the number of samples a profile of it
//          gets, whatever the machine's speed (a unit's cost varies threefold between
//          machines). No commands.
//   hog    a CPU competitor with many wakeups: ~100 us of spinning, then a 50 us sleep,
//          for ever (as a busy server or a parallel build loads a machine).
// FACTOR (work, batch; default 1) multiplies work_fifty's units: "batch 2" is the same job
// with a regression of exactly twice the time in work_fifty (profctl diff's test).
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
// Iterations of one unit of work; `work N` sets it (longer units: fewer clock reads per
// second of CPU, so the measurement's own cost stays small next to what it measures).
static int unit_iterations = 20000;
// Per thread: a shared counter would bounce its cache line between the workers, and a
// unit would cost two or three times more whenever both ran at once.
static __thread volatile unsigned long sink;

static inline long long now_ns(clockid_t c) { return sampling_clock_ns(c); }

NOINLINE static void unit(void) {
  for (int i = 0; i < unit_iterations; ++i) {
    sink += (unsigned long)i * 7u;
  }
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);  // between units, as real code reads clocks
  sink += (unsigned long)ts.tv_nsec;
}

static int fifty_factor = 1;
static long batch_loops = -1;   // batch: loops per worker; -1: for ever, or by CPU time
static long batch_cpu_ms = -1;  // batch "Nms": CPU time per worker

NOINLINE void work_fifty(void) {
  for (int i = 0; i < 5 * fifty_factor; ++i)
    unit();
  KEEP_FRAME();
}
NOINLINE void work_thirty(void) {
  for (int i = 0; i < 3; ++i)
    unit();
  KEEP_FRAME();
}
NOINLINE void work_twenty(void) {
  for (int i = 0; i < 2; ++i)
    unit();
  KEEP_FRAME();
}

NOINLINE static void* worker(void* arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "worker");
  void (*fns[3])(void) = {work_fifty, work_thirty, work_twenty};
  // batch: no truth, so no syscalls between the units (by CPU time, one clock read per 8
  // loops of 10 units, ~1 ms or more): the job's cost is all in the units.
  for (long i = 0; batch_loops >= 0 && i < batch_loops; ++i) {
    for (int f = 0; f < 3; ++f) {
      fns[f]();
    }
  }
  if (batch_loops >= 0) {
    return NULL;
  }
  while (batch_cpu_ms >= 0) {
    for (int i = 0; i < 8; ++i) {
      for (int f = 0; f < 3; ++f) {
        fns[f]();
      }
    }
    if (now_ns(CLOCK_THREAD_CPUTIME_ID) >= batch_cpu_ms * 1000000LL) {
      return NULL;
    }
  }
  for (;;) {
    for (int f = 0; f < 3; ++f) {
      long long t0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
      fns[f]();
      atomic_fetch_add(&truth[f], now_ns(CLOCK_THREAD_CPUTIME_ID) - t0);
    }
  }
  return NULL;
}

static pthread_t workers[2];

// Both workers' CPU time so far, from their CPU clocks: what a cpu profile of them sums to.
static long long workers_cpu_ns(void) {
  long long sum = 0;
  for (int i = 0; i < 2; ++i) {
    clockid_t c;
    if (pthread_getcpuclockid(workers[i], &c) == 0) {
      sum += now_ns(c);
    }
  }
  return sum;
}

int main(int argc, char** argv) {
  sampling_die_with_parent();
  if (argc > 2 && strcmp(argv[1], "work") == 0) {
    unit_iterations = atoi(argv[2]) > 0 ? atoi(argv[2]) : 20000;
  } else if (argc > 2) {
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
  if (argc > 1 && strcmp(argv[1], "batch") == 0) {
    const long n = argc > 3 && atol(argv[3]) > 0 ? atol(argv[3]) : 3000;
    const char* unit = argc > 3 ? argv[3] + strspn(argv[3], "0123456789") : "";
    if (strcmp(unit, "ms") == 0) {
      batch_cpu_ms = n;
    } else {
      batch_loops = n;
    }
    for (int i = 0; i < 2; ++i)
      pthread_create(&workers[i], NULL, worker, NULL);
    for (int i = 0; i < 2; ++i)
      pthread_join(workers[i], NULL);
    return 0;
  }
  for (int i = 0; i < 2; ++i)
    pthread_create(&workers[i], NULL, worker, NULL);
  target_say("ready");
  struct target_lines in = {0};
  char line[128];
  while (target_next_line(&in, line, sizeof line) != NULL) {
    if (strcmp(line, "truth") == 0) {
      char out[160];
      snprintf(out, sizeof out, "fifty=%lld thirty=%lld twenty=%lld cpu=%lld",
               atomic_load(&truth[0]), atomic_load(&truth[1]), atomic_load(&truth[2]),
               workers_cpu_ns());
      target_say(out);
    } else if (strcmp(line, "quit") == 0) {
      break;
    }
  }
  return 0;
}
