// SPDX-License-Identifier: MIT
// signals [ECHO_FD]: counts the signals it receives, while several threads are busy or blocked, so
// that a test can check that a tracer neither loses nor invents a signal.
//   SIGUSR1: counted; when ECHO_FD is given, the handler also writes one byte 'u' to it, so a
//   sender
//            can wait for each receipt before sending the next (standard signals coalesce while one
//            is pending; with the echo the count is exact).
//   SIGRTMIN: counted (real-time signals queue, so a burst is counted exactly without an echo).
// Handlers are installed with SA_RESTART; the counters are lock-free atomics (async-signal-safe)
// since any thread may run a handler.
//
// Threads: "busy" (spins in busy_loop, state R), "futexwait" (pthread_cond_wait, never signalled),
// "sleeper" (nanosleep loop), "reader" (read on a pipe nobody writes), and main (reads commands).
//
// Protocol: "ready" on stdout once every thread is in position (checked in /proc, no sleeps); then
// commands on stdin, one line each:
//   count -> "usr1=N rt=M"     ping -> "pong"     quit -> exit. EOF also exits.
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "target_util.h"

static atomic_long usr1_count;
static atomic_long rt_count;
static int echo_fd = -1;
static int never_pipe[2];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static volatile unsigned long busy_count;
static atomic_int tid_futex, tid_sleeper, tid_reader;

static void on_usr1(int sig) {
  (void)sig;
  atomic_fetch_add(&usr1_count, 1);
  if (echo_fd >= 0) {
    ssize_t r = write(echo_fd, "u", 1);
    (void)r;
  }
}

static void on_rt(int sig) {
  (void)sig;
  atomic_fetch_add(&rt_count, 1);
}

NOINLINE void busy_loop(void) {
  for (;;) {
    busy_count++;
  }
}

NOINLINE void* busy_main(void* arg) {
  (void)arg;
  busy_loop();
  KEEP_FRAME();
  return NULL;
}

NOINLINE void* futex_main(void* arg) {
  (void)arg;
  atomic_store(&tid_futex, target_gettid());
  pthread_mutex_lock(&lock);
  for (;;) {
    pthread_cond_wait(&cond, &lock);
    KEEP_FRAME();
  }
  return NULL;
}

NOINLINE void* sleeper_main(void* arg) {
  (void)arg;
  atomic_store(&tid_sleeper, target_gettid());
  for (;;) {
    struct timespec ts = {.tv_sec = 1000000, .tv_nsec = 0};
    nanosleep(&ts, NULL);  // EINTR after a handler: sleep again
    KEEP_FRAME();
  }
  return NULL;
}

NOINLINE void* reader_main(void* arg) {
  (void)arg;
  atomic_store(&tid_reader, target_gettid());
  char c;
  for (;;) {
    if (read(never_pipe[0], &c, 1) <= 0) {
      KEEP_FRAME();
    }
  }
  return NULL;
}

NOINLINE void signals_command_loop(void) {
  struct target_lines in = {.fd = 0, .len = 0};
  char line[256];
  char out[96];
  while (target_next_line(&in, line, sizeof line)) {
    if (strcmp(line, "count") == 0) {
      snprintf(out, sizeof out, "usr1=%ld rt=%ld", atomic_load(&usr1_count),
               atomic_load(&rt_count));
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

static void start(const char* name, void* (*fn)(void*)) {
  pthread_t t;
  if (pthread_create(&t, NULL, fn, NULL) != 0) {
    perror("pthread_create");
    exit(1);
  }
  pthread_setname_np(t, name);
}

static void wait_tid_blocked(atomic_int* tid, long nr) {
  while (atomic_load(tid) == 0) {
    sched_yield();
  }
  target_wait_blocked_in(atomic_load(tid), nr);
}

int main(int argc, char** argv) {
  if (argc > 1) {
    echo_fd = (int)strtol(argv[1], NULL, 10);
  }
  if (pipe(never_pipe) != 0) {
    perror("pipe");
    return 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sa.sa_handler = on_usr1;
  sigaction(SIGUSR1, &sa, NULL);
  sa.sa_handler = on_rt;
  sigaction(SIGRTMIN, &sa, NULL);

  start("busy", busy_main);
  start("futexwait", futex_main);
  start("sleeper", sleeper_main);
  start("reader", reader_main);
  wait_tid_blocked(&tid_futex, SYS_futex);
  wait_tid_blocked(&tid_sleeper, SYS_clock_nanosleep);
  wait_tid_blocked(&tid_reader, SYS_read);
  while (busy_count == 0) {
    sched_yield();
  }
  target_say("ready");
  signals_command_loop();
  KEEP_FRAME();
  return 0;
}
