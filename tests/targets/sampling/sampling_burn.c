// SPDX-License-Identifier: MIT
// sampling_burn: two threads, "burner-a" and "burner-b", that pass a token back and forth so that
// exactly one of them runs at a time, and split their CPU time 3:1 on their own CPU clocks
// (CLOCK_THREAD_CPUTIME_ID): burner-a spins in burn_a() until it has used 3 ms more CPU, hands the
// token to burner-b and blocks; burner-b spins in burn_b() for 1 ms of CPU and hands it back. The
// deadlines are chained (each one is the previous one plus 3 or 1 ms), so overshoots and the cost
// of the hand-off do not add up: over any long stretch, CPU(a) : CPU(b) = 3 : 1.
//
// Everything a burner does, blocking included, happens inside burn_a() / burn_b(), so every stack
// of burner-a contains burn_a and every stack of burner-b contains burn_b: a cpu profile that
// charges each thread's CPU time to its stacks gives burn_a : burn_b = 3 : 1 whatever the phase
// of the samples.
//
// Protocol: "ready a=TA b=TB" once both burners have used at least 300 ms of CPU (so a profiler
// that charges a thread's CPU from before the attach to its first sample is caught); then
// commands on stdin:  ping -> pong    quit -> bye, exit(0). End of file exits.
//
// Stacks (innermost first):
//   "burner-a": burn_a (or [libc: clock_gettime | read | write], burn_a), burner_a_main,
//               start_thread, clone3;  "burner-b": the same with burn_b, burner_b_main
//   main:       [libc: read], burn_command_loop, main, [libc], _start
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sampling_util.h"

static atomic_int tid_a, tid_b;
static int to_a[2], to_b[2];  // the token: one byte written to the other burner's pipe
static volatile unsigned long sink_a, sink_b;

static void take_token(int fd) {
  char c;
  while (read(fd, &c, 1) != 1) {
    KEEP_FRAME();
  }
}

static void give_token(int fd) {
  if (write(fd, "t", 1) != 1) {
    exit(1);
  }
}

// burner-a's whole life: 3 ms of CPU per turn.
NOINLINE void burn_a(void) {
  const long long start = sampling_clock_ns(CLOCK_THREAD_CPUTIME_ID);
  long long deadline = start;
  for (;;) {
    take_token(to_a[0]);
    deadline += 3000000LL;
    do {
      for (int i = 0; i < 20000; ++i) {
        sink_a += (unsigned long)i;
      }
    } while (sampling_clock_ns(CLOCK_THREAD_CPUTIME_ID) < deadline);
    if (deadline - start >= 300000000LL && atomic_load(&tid_a) == 0) {
      atomic_store(&tid_a, target_gettid());
    }
    give_token(to_b[1]);
  }
}

// burner-b's whole life: 1 ms of CPU per turn.
NOINLINE void burn_b(void) {
  const long long start = sampling_clock_ns(CLOCK_THREAD_CPUTIME_ID);
  long long deadline = start;
  for (;;) {
    take_token(to_b[0]);
    deadline += 1000000LL;
    do {
      for (int i = 0; i < 20000; ++i) {
        sink_b += (unsigned long)i;
      }
    } while (sampling_clock_ns(CLOCK_THREAD_CPUTIME_ID) < deadline);
    if (deadline - start >= 100000000LL && atomic_load(&tid_b) == 0) {
      atomic_store(&tid_b, target_gettid());
    }
    give_token(to_a[1]);
  }
}

NOINLINE void* burner_a_main(void* arg) {
  (void)arg;
  burn_a();
  KEEP_FRAME();
  return NULL;
}

NOINLINE void* burner_b_main(void* arg) {
  (void)arg;
  burn_b();
  KEEP_FRAME();
  return NULL;
}

NOINLINE void burn_command_loop(void) {
  struct target_lines in = {.fd = 0, .len = 0};
  char line[256];
  while (target_next_line(&in, line, sizeof line)) {
    if (strcmp(line, "ping") == 0) {
      target_say("pong");
    } else if (strcmp(line, "quit") == 0) {
      target_say("bye");
      exit(0);
    } else {
      target_say("unknown");
    }
  }
}

static void start(const char* name, void* (*fn)(void*)) {
  pthread_t t;
  if (pthread_create(&t, NULL, fn, NULL) != 0) {
    perror("pthread_create");
    exit(1);
  }
  pthread_setname_np(t, name);
}

int main(void) {
  sampling_die_with_parent();
  if (pipe(to_a) != 0 || pipe(to_b) != 0) {
    perror("pipe");
    return 1;
  }
  start("burner-a", burner_a_main);
  start("burner-b", burner_b_main);
  give_token(to_a[1]);
  while (atomic_load(&tid_a) == 0 || atomic_load(&tid_b) == 0) {
    sched_yield();
  }
  char ready[64];
  snprintf(ready, sizeof ready, "ready a=%d b=%d", atomic_load(&tid_a), atomic_load(&tid_b));
  target_say(ready);
  burn_command_loop();
  KEEP_FRAME();
  return 0;
}
