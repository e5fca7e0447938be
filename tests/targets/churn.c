// SPDX-License-Identifier: MIT
// churn [CHURNERS]: CHURNERS threads (default 2, named "churner") each create and join a
// short-lived thread ("churn-worker") in a tight loop, for ever. Threads appear and exit all the
// time, which is what a stop-the-world must survive.
//
// Protocol: "ready churners=T1,T2,..." on stdout (the churner tids) once CHURNERS workers have
// been joined; then commands on
// stdin, one line each:
//   count -> "count N"   N = workers joined so far (grows while the process is healthy)
//   ping  -> "pong"      quit -> exit. EOF also exits.
//
// Expected stacks: workers have no exact stack (they come and go; a worker just created still has
// its creator's name "churner" until pthread_setname_np runs, so tell churners by tid); main is in
//   [libc: read], churn_command_loop, main, [libc], _start
// and every churner has churner_main on its stack, then start_thread, __clone3.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "target_util.h"

static atomic_ulong joined;
static atomic_int churner_tids[64];
static volatile unsigned long sink;

NOINLINE void* churn_worker(void* arg) {
  for (int i = 0; i < 100; ++i) {
    sink += (unsigned long)arg + (unsigned long)i;
  }
  return NULL;
}

NOINLINE void* churner_main(void* arg) {
  atomic_store(&churner_tids[(long)arg], target_gettid());
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  for (unsigned long i = 0;; ++i) {
    pthread_t t;
    if (pthread_create(&t, &attr, churn_worker, (void*)i) != 0) {
      sched_yield();  // EAGAIN under pressure: try again
      continue;
    }
    pthread_setname_np(t, "churn-worker");
    pthread_join(t, NULL);
    atomic_fetch_add(&joined, 1);
  }
  return NULL;
}

NOINLINE void churn_command_loop(void) {
  struct target_lines in = {.fd = 0, .len = 0};
  char line[256];
  char out[64];
  while (target_next_line(&in, line, sizeof line)) {
    if (strcmp(line, "count") == 0) {
      snprintf(out, sizeof out, "count %lu", atomic_load(&joined));
      target_say(out);
    } else if (strcmp(line, "ping") == 0) {
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
  long churners = argc > 1 ? strtol(argv[1], NULL, 10) : 2;
  if (churners <= 0 || churners > 64) {
    fprintf(stderr, "usage: churn [CHURNERS in 1..64]\n");
    return 1;
  }
  for (long i = 0; i < churners; ++i) {
    pthread_t t;
    if (pthread_create(&t, NULL, churner_main, (void*)i) != 0) {
      perror("pthread_create");
      return 1;
    }
    pthread_setname_np(t, "churner");
  }
  while (atomic_load(&joined) < (unsigned long)churners) {
    sched_yield();
  }
  printf("ready churners=");
  for (long i = 0; i < churners; ++i) {
    while (atomic_load(&churner_tids[i]) == 0) {
      sched_yield();
    }
    printf("%s%d", i ? "," : "", atomic_load(&churner_tids[i]));
  }
  printf("\n");
  fflush(stdout);
  churn_command_loop();
  KEEP_FRAME();
  return 0;
}
