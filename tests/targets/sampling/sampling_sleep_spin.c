// SPDX-License-Identifier: MIT
// sampling_sleep_spin: one thread that only sleeps ("sleeper") and one that only spins ("spinner"),
// for wall vs cpu profiles, for ending a capture with SIGINT, and for a target that exits in the
// middle of a capture.
//
// `sampling_sleep_spin N` starts N more spinners ("spinner-1".."spinner-N", the same code), for
// a machine with more running threads than CPUs.
//
// Protocol: "ready sleeper=T spinner=T" once the sleeper is blocked in clock_nanosleep, the
// spinner has started counting and every spinner-N has reached its own code; then commands on
// stdin, one line each:
//   count          -> "count N"   N = the spinner's iterations so far (grows while it runs)
//   ping           -> pong
//   exit-after MS  -> "ok", then main spins in exit_countdown() for MS ms (CLOCK_MONOTONIC) and
//                     calls exit(0)
//   quit           -> bye, exit(0). End of file exits.
//
// Stacks (innermost first):
//   "sleeper": [libc: clock_nanosleep, nanosleep], sleeper_loop, sleeper_main, start_thread, clone3
//   "spinner": spin_loop, spinner_main, start_thread, clone3
//   "spinner-N": spin_loop, more_spinner_main, start_thread, clone3
//   main:      [libc: read], sleep_spin_command_loop, main, [libc], _start
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sampling_util.h"

static atomic_int sleeper_tid, spinner_tid;
static atomic_ulong spin_count;
static atomic_long more_started;  // the N more spinners that have reached their code

NOINLINE void sleeper_loop(void) {
  for (;;) {
    struct timespec ts = {.tv_sec = 1000000, .tv_nsec = 0};
    nanosleep(&ts, NULL);
    KEEP_FRAME();
  }
}

NOINLINE void* sleeper_main(void* arg) {
  (void)arg;
  atomic_store(&sleeper_tid, target_gettid());
  sleeper_loop();
  KEEP_FRAME();
  return NULL;
}

NOINLINE void spin_loop(void) {
  for (;;) {
    for (int i = 0; i < 1000; ++i) {
      asm volatile("" ::: "memory");
    }
    atomic_fetch_add_explicit(&spin_count, 1, memory_order_relaxed);
  }
}

NOINLINE void* spinner_main(void* arg) {
  (void)arg;
  atomic_store(&spinner_tid, target_gettid());
  spin_loop();
  KEEP_FRAME();
  return NULL;
}

NOINLINE void exit_countdown(long ms) {
  long long end = sampling_clock_ns(CLOCK_MONOTONIC) + ms * 1000000LL;
  while (sampling_clock_ns(CLOCK_MONOTONIC) < end) {
    KEEP_FRAME();
  }
  exit(0);
}

NOINLINE void sleep_spin_command_loop(void) {
  struct target_lines in = {.fd = 0, .len = 0};
  char line[256];
  char out[64];
  while (target_next_line(&in, line, sizeof line)) {
    if (strcmp(line, "count") == 0) {
      snprintf(out, sizeof out, "count %lu", atomic_load(&spin_count));
      target_say(out);
    } else if (strcmp(line, "ping") == 0) {
      target_say("pong");
    } else if (strncmp(line, "exit-after ", 11) == 0) {
      target_say("ok");
      exit_countdown(strtol(line + 11, NULL, 10));
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

NOINLINE void* more_spinner_main(void* arg) {
  (void)arg;
  atomic_fetch_add(&more_started, 1);
  spin_loop();
  KEEP_FRAME();
  return NULL;
}

int main(int argc, char** argv) {
  sampling_die_with_parent();
  start("sleeper", sleeper_main);
  start("spinner", spinner_main);
  const long more = argc > 1 ? strtol(argv[1], NULL, 10) : 0;
  for (long i = 1; i <= more && i <= 256; ++i) {
    char name[16];
    snprintf(name, sizeof name, "spinner-%ld", i);
    start(name, more_spinner_main);
  }
  // Ready once every thread runs its own code: a spinner still in clone3 (not yet given a
  // CPU on a busy machine) would be sampled there.
  const long started = more < 256 ? more : 256;
  while (atomic_load(&sleeper_tid) == 0 || atomic_load(&spinner_tid) == 0 ||
         atomic_load(&spin_count) == 0 || atomic_load(&more_started) < started) {
    sched_yield();
  }
  target_wait_blocked_in(atomic_load(&sleeper_tid), SYS_clock_nanosleep);
  char ready[96];
  snprintf(ready, sizeof ready, "ready sleeper=%d spinner=%d", atomic_load(&sleeper_tid),
           atomic_load(&spinner_tid));
  target_say(ready);
  sleep_spin_command_loop();
  KEEP_FRAME();
  return 0;
}
