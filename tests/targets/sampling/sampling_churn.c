// SPDX-License-Identifier: MIT
// sampling_churn: two threads ("churner") each create and join short-lived threads in a loop,
// counting every creation, and can be paused, so that a test knows exactly how many threads were
// created between two of its commands.
//
// A creation is counted *before* pthread_create (and uncounted if it fails), so a creation counted
// after a "count" reply was cloned after it; "stop" returns once no churner is inside a creation.
//
// Protocol: "ready churners=T1,T2" once both churners have created a thread; then commands:
//   count  -> "count N"            N = creations so far
//   stop   -> "stopped count=N"    churners idle; N is final until "resume"
//   resume -> "resumed"
//   ping -> pong     quit -> bye, exit(0). End of file exits.
//
// Stack of a churner at each clone (innermost first):
//   [libc: clone3, create_thread, pthread_create], churn_create_one, churner_main, start_thread,
//   clone3
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sampling_util.h"

enum { kChurners = 2 };
static atomic_long created;
static atomic_int paused;
static atomic_int busy[kChurners];  // set before testing `paused`, cleared after a creation
static atomic_int churner_tids[kChurners];
static volatile unsigned long sink;

NOINLINE void* churn_worker(void* arg) {
  sink += (unsigned long)arg;
  return NULL;
}

NOINLINE void churn_create_one(pthread_attr_t* attr, unsigned long i) {
  pthread_t t;
  atomic_fetch_add(&created, 1);
  if (pthread_create(&t, attr, churn_worker, (void*)i) != 0) {
    atomic_fetch_sub(&created, 1);  // EAGAIN under pressure: not a creation
    sched_yield();
    return;
  }
  KEEP_FRAME();
  pthread_join(t, NULL);
}

NOINLINE void* churner_main(void* arg) {
  long me = (long)arg;
  atomic_store(&churner_tids[me], target_gettid());
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  for (unsigned long i = 0;; ++i) {
    // Dekker with seq_cst atomics: once "stop" has stored paused=1 and then seen busy=0, this
    // thread's next busy=1 is followed by a load that sees paused=1.
    atomic_store(&busy[me], 1);
    if (atomic_load(&paused)) {
      atomic_store(&busy[me], 0);
      sched_yield();
      continue;
    }
    churn_create_one(&attr, i);
    KEEP_FRAME();
    atomic_store(&busy[me], 0);
  }
  return NULL;
}

NOINLINE void churn_command_loop(void) {
  struct target_lines in = {.fd = 0, .len = 0};
  char line[256];
  char out[64];
  while (target_next_line(&in, line, sizeof line)) {
    if (strcmp(line, "count") == 0) {
      snprintf(out, sizeof out, "count %ld", atomic_load(&created));
      target_say(out);
    } else if (strcmp(line, "stop") == 0) {
      atomic_store(&paused, 1);
      for (int i = 0; i < kChurners; ++i) {
        while (atomic_load(&busy[i])) {
          sched_yield();
        }
      }
      snprintf(out, sizeof out, "stopped count=%ld", atomic_load(&created));
      target_say(out);
    } else if (strcmp(line, "resume") == 0) {
      atomic_store(&paused, 0);
      target_say("resumed");
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

int main(void) {
  sampling_die_with_parent();
  for (long i = 0; i < kChurners; ++i) {
    pthread_t t;
    if (pthread_create(&t, NULL, churner_main, (void*)i) != 0) {
      perror("pthread_create");
      return 1;
    }
    pthread_setname_np(t, "churner");
  }
  while (atomic_load(&created) < 2 * kChurners + kChurners) {
    sched_yield();
  }
  printf("ready churners=");
  for (long i = 0; i < kChurners; ++i) {
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
