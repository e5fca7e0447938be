// SPDX-License-Identifier: MIT
// sampling_odd MODE: targets that do what a tracer finds unusual (issue: attach/ holds up).
//   spin8     8 threads ("spinner") spin, counting loops: job control is applied to it from
//             outside while it is sampled.
//   clonevm   the main thread loops clone(CLONE_VM|CLONE_FS|CLONE_FILES) children (exit signal
//             SIGCHLD, not threads) that sleep 2 ms and exit, waited with __WALL; commands
//             come on a second thread.
//   mainexit  4 threads ("worker") sleep in a loop; the main thread calls pthread_exit.
//             Commands come on a worker.
// Protocol: "ready pid=P" once set up; commands on stdin: "count" -> "count N" (loops done by
// the spinners / clone children reaped / worker wakeups), "quit" or EOF -> exit(0).
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sampling_util.h"

static atomic_ulong g_count;

static void command_loop(void) {
  struct target_lines in = {0};
  char line[256];
  while (target_next_line(&in, line, sizeof line) != NULL) {
    if (strcmp(line, "count") == 0) {
      char out[64];
      snprintf(out, sizeof out, "count %lu", atomic_load(&g_count));
      target_say(out);
    } else if (strcmp(line, "quit") == 0) {
      break;
    }
  }
  exit(0);
}

static void* command_thread(void* arg) {
  (void)arg;
  command_loop();
  return NULL;
}

NOINLINE static void* spinner(void* arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "spinner");
  for (;;) {
    for (volatile int i = 0; i < 10000; ++i) {
    }
    atomic_fetch_add(&g_count, 1);
  }
  return NULL;
}

static int clone_child(void* arg) {
  (void)arg;
  struct timespec ts = {0, 2000000};
  nanosleep(&ts, NULL);
  return 0;
}

NOINLINE static void* sleeper(void* arg) {
  (void)arg;
  for (;;) {
    struct timespec ts = {0, 5000000};
    nanosleep(&ts, NULL);
    atomic_fetch_add(&g_count, 1);
  }
  return NULL;
}

int main(int argc, char** argv) {
  sampling_die_with_parent();
  const char* mode = argc > 1 ? argv[1] : "";
  pthread_t t;
  char ready[64];
  snprintf(ready, sizeof ready, "ready pid=%d", (int)getpid());
  if (strcmp(mode, "spin8") == 0) {
    for (int i = 0; i < 8; ++i) {
      pthread_create(&t, NULL, spinner, NULL);
    }
    target_say(ready);
    command_loop();
  } else if (strcmp(mode, "clonevm") == 0) {
    pthread_create(&t, NULL, command_thread, NULL);
    const size_t stack_size = 64 * 1024;
    char* stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    target_say(ready);
    for (;;) {
      pid_t c = clone(clone_child, stack + stack_size, CLONE_VM | CLONE_FS | CLONE_FILES,
                      NULL);
      if (c < 0) {
        perror("clone");
        exit(1);
      }
      int st;
      while (waitpid(c, &st, __WALL) < 0) {
      }
      atomic_fetch_add(&g_count, 1);
    }
  } else if (strcmp(mode, "mainexit") == 0) {
    for (int i = 0; i < 3; ++i) {
      pthread_create(&t, NULL, sleeper, NULL);
    }
    pthread_create(&t, NULL, command_thread, NULL);
    target_say(ready);
    pthread_exit(NULL);
  }
  fprintf(stderr, "usage: sampling_odd spin8|clonevm|mainexit\n");
  return 2;
}
