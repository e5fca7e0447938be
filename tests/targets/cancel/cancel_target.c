// SPDX-License-Identifier: MIT
// cancel_target: threads cancelled (pthread_cancel) while blocked in a futex wait, each with
// pthread_cleanup_push handlers that count their calls and unlock what the thread holds.
// Built twice: plain C (glibc runs the handlers by longjmp) and with -fexceptions (the
// handlers are __attribute__((cleanup)) blocks the unwinder runs, as glibc's own are).
// Protocol: "ready pid=P" on stdout; commands on stdin, one line each:
//   cond N | sem N | join N -> N rounds. Each round a fresh thread locks the round's mutex,
//     pushes a handler that unlocks it, and waits: in pthread_cond_wait (with a second
//     handler for the condition's mutex), in sem_wait, or in pthread_join of a helper
//     thread. Once it is blocked in the futex system call, its stack is checked for the
//     wait probe's hijacked return address (an address in an anonymous executable mapping:
//     profctl's code area), then it is cancelled and joined. Reply:
//     "done KIND rounds=N hijacked=H handlers=K/E unlocked=U cancelled=C joined=J"
//     H: rounds whose wait was entered through the probe; K: handler calls, E expected;
//     U: rounds whose mutexes were free afterwards (trylock); C: joins that returned
//     PTHREAD_CANCELED; J (join only, else N): rounds whose helper thread main could still
//     join afterwards (glibc's own cleanup in pthread_join ran).
//   quit / EOF -> exit 0
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../target_util.h"
#include "cancel_util.h"

enum kind { KIND_COND, KIND_SEM, KIND_JOIN };

struct round {
  pthread_mutex_t held;  // locked by the waiter; its handler unlocks it
  pthread_mutex_t cmu;   // cond: the condition's mutex (reacquired by the cancelled wait)
  pthread_cond_t cv;
  sem_t sem;  // sem: never posted
  sem_t go;   // join: lets the helper thread end
  pthread_t helper;
  int tid;        // the waiter's, release-stored once it is about to wait
  uintptr_t top;  // an address in the waiter's own frame
};

static int handler_calls;

static void unlock_handler(void* mutex) {
  pthread_mutex_unlock(mutex);
  __atomic_add_fetch(&handler_calls, 1, __ATOMIC_SEQ_CST);
}

static void about_to_wait(struct round* r, volatile char* top) {
  r->top = (uintptr_t)top;
  __atomic_store_n(&r->tid, cancel_gettid(), __ATOMIC_RELEASE);
}

CANCEL_NOINLINE static void* cond_waiter(void* arg) {
  struct round* r = arg;
  volatile char top = 0;
  pthread_mutex_lock(&r->held);
  pthread_cleanup_push(unlock_handler, &r->held);
  pthread_mutex_lock(&r->cmu);
  pthread_cleanup_push(unlock_handler, &r->cmu);
  about_to_wait(r, &top);
  for (;;) {
    pthread_cond_wait(&r->cv, &r->cmu);
  }
  pthread_cleanup_pop(1);
  pthread_cleanup_pop(1);
  return NULL;
}

CANCEL_NOINLINE static void* sem_waiter(void* arg) {
  struct round* r = arg;
  volatile char top = 0;
  pthread_mutex_lock(&r->held);
  pthread_cleanup_push(unlock_handler, &r->held);
  about_to_wait(r, &top);
  for (;;) {
    sem_wait(&r->sem);
  }
  pthread_cleanup_pop(1);
  return NULL;
}

static void* helper(void* arg) {
  struct round* r = arg;
  while (sem_wait(&r->go) != 0) {
  }
  return NULL;
}

CANCEL_NOINLINE static void* join_waiter(void* arg) {
  struct round* r = arg;
  volatile char top = 0;
  pthread_mutex_lock(&r->held);
  pthread_cleanup_push(unlock_handler, &r->held);
  about_to_wait(r, &top);
  pthread_join(r->helper, NULL);
  pthread_cleanup_pop(1);
  return NULL;
}

static void run_rounds(enum kind kind, int n, char* out, size_t out_size) {
  static const char* const names[] = {"cond", "sem", "join"};
  const int per_round = kind == KIND_COND ? 2 : 1;
  int hijacked = 0;
  int unlocked = 0;
  int cancelled = 0;
  int joined = 0;
  __atomic_store_n(&handler_calls, 0, __ATOMIC_SEQ_CST);
  for (int i = 0; i < n; ++i) {
    // Never freed: a round whose cleanup did not run leaves its condition variable with a
    // waiter that is gone (destroying it could block forever).
    struct round* r = calloc(1, sizeof *r);
    pthread_mutex_init(&r->held, NULL);
    pthread_mutex_init(&r->cmu, NULL);
    pthread_cond_init(&r->cv, NULL);
    sem_init(&r->sem, 0, 0);
    sem_init(&r->go, 0, 0);
    if (kind == KIND_JOIN) {
      pthread_create(&r->helper, NULL, helper, r);
    }
    pthread_t t;
    pthread_create(&t, NULL,
                   kind == KIND_COND  ? cond_waiter
                   : kind == KIND_SEM ? sem_waiter
                                      : join_waiter,
                   r);
    int tid;
    while ((tid = __atomic_load_n(&r->tid, __ATOMIC_ACQUIRE)) == 0) {
      sched_yield();
    }
    hijacked += cancel_wait_hijacked(tid, r->top);
    pthread_cancel(t);
    void* result = NULL;
    pthread_join(t, &result);
    cancelled += result == PTHREAD_CANCELED;
    int free_now = pthread_mutex_trylock(&r->held) == 0;
    if (kind == KIND_COND) {
      free_now = pthread_mutex_trylock(&r->cmu) == 0 && free_now;
    }
    unlocked += free_now;
    if (kind == KIND_JOIN) {
      sem_post(&r->go);
      joined += pthread_join(r->helper, NULL) == 0;
    } else {
      joined++;
    }
  }
  snprintf(out, out_size,
           "done %s rounds=%d hijacked=%d handlers=%d/%d unlocked=%d cancelled=%d joined=%d",
           names[kind], n, hijacked, __atomic_load_n(&handler_calls, __ATOMIC_SEQ_CST),
           n * per_round, unlocked, cancelled, joined);
}

int main(void) {
  cancel_die_with_parent();
  char line[256];
  snprintf(line, sizeof line, "ready pid=%d", (int)getpid());
  cancel_say(line);
  struct target_lines in = {0};
  while (target_next_line(&in, line, sizeof line) != NULL) {
    char out[200];
    int n = 0;
    if (sscanf(line, "cond %d", &n) == 1) {
      run_rounds(KIND_COND, n, out, sizeof out);
    } else if (sscanf(line, "sem %d", &n) == 1) {
      run_rounds(KIND_SEM, n, out, sizeof out);
    } else if (sscanf(line, "join %d", &n) == 1) {
      run_rounds(KIND_JOIN, n, out, sizeof out);
    } else if (strcmp(line, "quit") == 0) {
      break;
    } else {
      snprintf(out, sizeof out, "unknown command");
    }
    cancel_say(out);
  }
  return 0;
}
