// SPDX-License-Identifier: MIT
// sampling_threadcreate [startup]: creates exactly 7 threads from create_from_alpha() (called by
// the main thread) and exactly 3 from create_from_beta() (called by the thread "beta-creator"),
// so that a threadcreate profile can be checked count by count and stack by stack.
//
// At start, main creates "beta-creator" (from start_beta_creator()), which waits in read() on a
// pipe. The created threads record their tid and exit at once; their creators join them.
//
// Default mode. "ready creator=T" on stdout (T: beta-creator's tid) once beta-creator is blocked in
// read; then commands on stdin, one line each:
//   go   -> main calls create_from_alpha() (7 threads), then wakes beta-creator, which calls
//           create_from_beta() (3 threads); when all 10 are joined: "done alpha=t,... beta=t,..."
//           (the new threads' tids). "go" works once.
//   ping -> pong     quit -> bye and exit(0). End of file exits.
// "startup" mode: does the same as "go" at once (no ready line, no stdin), prints
// "done pid=P creator=T alpha=... beta=..." and exits 0 — 11 creations in all (beta-creator too).
//
// Stacks at each clone (innermost first): [libc: clone3, create_thread, pthread_create],
//   create_from_alpha, tc_command_loop (or run_all), main, [libc], _start       (thread main)
//   create_from_beta, beta_creator_main, start_thread, clone3                 (thread beta-creator)
//   start_beta_creator, main, [libc], _start                                 (thread main)
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sampling_util.h"

enum { kAlpha = 7, kBeta = 3 };

static int alpha_tids[kAlpha];
static int beta_tids[kBeta];
static atomic_int creator_tid;
static int go_pipe[2];    // main -> beta-creator: one byte = "create your threads"
static int done_pipe[2];  // beta-creator -> main: one byte = "joined"

NOINLINE void* new_thread_main(void* slot) {
  *(int*)slot = target_gettid();
  return NULL;
}

static void create_or_die(pthread_t* t, int* slot) {
  if (pthread_create(t, NULL, new_thread_main, slot) != 0) {
    perror("pthread_create");
    exit(1);
  }
}

NOINLINE void create_from_alpha(void) {
  pthread_t t[kAlpha];
  for (int i = 0; i < kAlpha; ++i) {
    create_or_die(&t[i], &alpha_tids[i]);
    KEEP_FRAME();
  }
  for (int i = 0; i < kAlpha; ++i) {
    pthread_join(t[i], NULL);
  }
}

NOINLINE void create_from_beta(void) {
  pthread_t t[kBeta];
  for (int i = 0; i < kBeta; ++i) {
    create_or_die(&t[i], &beta_tids[i]);
    KEEP_FRAME();
  }
  for (int i = 0; i < kBeta; ++i) {
    pthread_join(t[i], NULL);
  }
}

NOINLINE void* beta_creator_main(void* arg) {
  (void)arg;
  atomic_store(&creator_tid, target_gettid());
  char c;
  while (read(go_pipe[0], &c, 1) != 1) {
    KEEP_FRAME();
  }
  create_from_beta();
  KEEP_FRAME();
  if (write(done_pipe[1], "d", 1) != 1) {
    exit(1);
  }
  return NULL;
}

NOINLINE void start_beta_creator(void) {
  pthread_t t;
  if (pthread_create(&t, NULL, beta_creator_main, NULL) != 0) {
    perror("pthread_create");
    exit(1);
  }
  KEEP_FRAME();
  pthread_setname_np(t, "beta-creator");
  pthread_detach(t);
}

static void format_tids(char* out, size_t size, const char* key, const int* tids, int n) {
  size_t len = strlen(out);
  len += (size_t)snprintf(out + len, size - len, " %s=", key);
  for (int i = 0; i < n && len < size; ++i) {
    len += (size_t)snprintf(out + len, size - len, "%s%d", i ? "," : "", tids[i]);
  }
}

// Runs both creators and fills `out` with the " alpha=... beta=..." part of the done line.
NOINLINE void run_all(char* out, size_t size) {
  create_from_alpha();
  KEEP_FRAME();
  if (write(go_pipe[1], "g", 1) != 1) {
    exit(1);
  }
  char c;
  while (read(done_pipe[0], &c, 1) != 1) {
    KEEP_FRAME();
  }
  format_tids(out, size, "alpha", alpha_tids, kAlpha);
  format_tids(out, size, "beta", beta_tids, kBeta);
}

NOINLINE void tc_command_loop(void) {
  struct target_lines in = {.fd = 0, .len = 0};
  char line[256];
  char out[512];
  int went = 0;
  while (target_next_line(&in, line, sizeof line)) {
    if (strcmp(line, "go") == 0 && !went) {
      went = 1;
      strcpy(out, "done");
      run_all(out, sizeof out);
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
  sampling_die_with_parent();
  if (pipe(go_pipe) != 0 || pipe(done_pipe) != 0) {
    perror("pipe");
    return 1;
  }
  int startup = argc > 1 && strcmp(argv[1], "startup") == 0;
  start_beta_creator();
  KEEP_FRAME();
  while (atomic_load(&creator_tid) == 0) {
    sched_yield();
  }
  if (startup) {
    char out[512];
    snprintf(out, sizeof out, "done pid=%d creator=%d", (int)getpid(), atomic_load(&creator_tid));
    run_all(out, sizeof out);
    target_say(out);
    return 0;
  }
  target_wait_blocked_in(atomic_load(&creator_tid), SYS_read);
  char ready[64];
  snprintf(ready, sizeof ready, "ready creator=%d", atomic_load(&creator_tid));
  target_say(ready);
  tc_command_loop();
  KEEP_FRAME();
  return 0;
}
