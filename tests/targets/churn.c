// churn [CHURNERS]: CHURNERS threads (default 2, named "churner") each create and join a
// short-lived thread ("churn-worker") in a tight loop, for ever. Threads appear and exit all the
// time, which is what a stop-the-world must survive.
//
// Protocol: "ready" on stdout once CHURNERS workers have been joined; then commands on
// stdin, one line each:
//   count -> "count N"   N = workers joined so far (grows while the process is healthy)
//   ping  -> "pong"      quit -> exit. EOF also exits.
//
// Expected stacks: no exact stack (they change all the time); main is in
//   [libc: read], churn_command_loop, main, [libc], _start
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "target_util.h"

static atomic_ulong joined;
static volatile unsigned long sink;

NOINLINE void* churn_worker(void* arg) {
  for (int i = 0; i < 100; ++i) {
    sink += (unsigned long)arg + (unsigned long)i;
  }
  return NULL;
}

NOINLINE void* churner_main(void* arg) {
  (void)arg;
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
  if (churners <= 0) {
    fprintf(stderr, "usage: churn [CHURNERS>0]\n");
    return 1;
  }
  for (long i = 0; i < churners; ++i) {
    pthread_t t;
    if (pthread_create(&t, NULL, churner_main, NULL) != 0) {
      perror("pthread_create");
      return 1;
    }
    pthread_setname_np(t, "churner");
  }
  while (atomic_load(&joined) < (unsigned long)churners) {
    sched_yield();
  }
  target_say("ready");
  churn_command_loop();
  KEEP_FRAME();
  return 0;
}
