// SPDX-License-Identifier: MIT
// sampling_run_modes MODE: how a program ends, for `profctl run` (whose exit status is the
// program's). Every mode first spends 100 ms of CPU in work() (stack: work, main, [libc], _start)
// so that the profiles cannot be empty.
//   exit N        -> returns N from main
//   abort         -> abort(): killed by SIGABRT (a shell would say 134)
//   term          -> handles SIGTERM: prints "ready", waits in sigsuspend(); on SIGTERM prints
//                    "got TERM" and exits 0
//   term-default  -> prints "ready" and waits in pause() with SIGTERM's default action (dies, 143)
// Output goes to stdout, which under `profctl run` is profctl's stdout.
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sampling_util.h"

static volatile unsigned long sink;
static volatile sig_atomic_t got_term;

NOINLINE void work(void) {
  long long end = sampling_clock_ns(CLOCK_THREAD_CPUTIME_ID) + 100000000LL;  // 100 ms of CPU
  while (sampling_clock_ns(CLOCK_THREAD_CPUTIME_ID) < end) {
    for (int i = 0; i < 10000; ++i) {
      sink += (unsigned long)i;
    }
  }
}

static void on_term(int sig) {
  (void)sig;
  got_term = 1;
}

NOINLINE void wait_for_term(void) {
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigprocmask(SIG_BLOCK, &block, &old);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_term;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  target_say("ready");
  while (!got_term) {
    sigsuspend(&old);
  }
  target_say("got TERM");
}

int main(int argc, char** argv) {
  sampling_die_with_parent();
  if (argc < 2) {
    fprintf(stderr, "usage: sampling_run_modes exit N | abort | term | term-default\n");
    return 2;
  }
  work();
  KEEP_FRAME();
  if (strcmp(argv[1], "exit") == 0 && argc > 2) {
    return (int)strtol(argv[2], NULL, 10);
  }
  if (strcmp(argv[1], "abort") == 0) {
    abort();
  }
  if (strcmp(argv[1], "term") == 0) {
    wait_for_term();
    return 0;
  }
  if (strcmp(argv[1], "term-default") == 0) {
    signal(SIGTERM, SIG_DFL);
    target_say("ready");
    for (;;) {
      pause();
    }
  }
  fprintf(stderr, "sampling_run_modes: unknown mode %s\n", argv[1]);
  return 2;
}
