// SPDX-License-Identifier: MIT
// many_threads N: N threads (default 500), each blocked in pause() inside a known function.
//
// Protocol: "ready N" on stdout once every thread is blocked in pause (checked in /proc, no
// sleeps); then commands on stdin, one line each: "ping" -> "pong", "quit" -> exit. EOF also exits.
//
// Expected stacks, innermost first ([libc] = one or more frames in libc.so.6):
//   every worker, named "worker-K" for K = 0..N-1 (state S, wait_syscall pause):
//     [libc: pause], many_block, many_thread_main, start_thread, __clone3
//   main (state S, wait_syscall read):
//     [libc: read], many_command_loop, main, [libc], _start
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "target_util.h"

static atomic_int* worker_tids;

NOINLINE void many_block(void) {
  for (;;) {
    pause();
    KEEP_FRAME();
  }
}

NOINLINE void* many_thread_main(void* arg) {
  atomic_store(&worker_tids[(long)arg], target_gettid());
  many_block();
  KEEP_FRAME();
  return NULL;
}

NOINLINE void many_command_loop(void) {
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

int main(int argc, char** argv) {
  long n = argc > 1 ? strtol(argv[1], NULL, 10) : 500;
  if (n <= 0) {
    fprintf(stderr, "usage: many_threads [N>0]\n");
    return 1;
  }
  worker_tids = calloc((size_t)n, sizeof *worker_tids);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 128 * 1024);
  for (long i = 0; i < n; ++i) {
    pthread_t t;
    if (pthread_create(&t, &attr, many_thread_main, (void*)i) != 0) {
      perror("pthread_create");
      return 1;
    }
    char name[32];  // at most 15 chars are used: N < 10^8
    snprintf(name, sizeof name, "worker-%ld", i);
    pthread_setname_np(t, name);
  }
  for (long i = 0; i < n; ++i) {
    while (atomic_load(&worker_tids[i]) == 0) {
      sched_yield();
    }
    target_wait_blocked_in(atomic_load(&worker_tids[i]), SYS_pause);
  }
  printf("ready %ld\n", n);
  fflush(stdout);
  many_command_loop();
  KEEP_FRAME();
  return 0;
}
