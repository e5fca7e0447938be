// SPDX-License-Identifier: MIT
// stack_target: a process whose every thread sits in a known place, so that a stack dump of it can
// be asserted frame by frame. Built four times from this one source (see CMakeLists.txt): CFI only,
// frame pointers, non-PIE, and a stripped copy of the CFI build.
//
// Protocol. When every thread is in position (checked from /proc/self/task/TID/syscall, not with a
// sleep), one line goes to stdout:
//   ready pid=P cond=0xA cond_size=N mutex=0xB mutex_size=M main=T recurser=T condwait=T
//         sleeper=T spinner=T mutexwait=T sigwaiter=T
// (one line; the addresses are in this process, the T are tids). Then main reads commands from
// stdin, one per line, and answers each with one line:
//   ping -> pong        quit -> bye, and exit(0)        (end of file also exits)
//
// Expected stacks, innermost first. "[libc]" is one or more frames in libc.so.6 (names depend on
// the glibc build; with libc6-dbg on Debian 12 they are the ones given). Every thread below main
// ends in start_thread, __clone3 (both libc). Thread names are set with pthread_setname_np.
//
//   main       (state S, wait_syscall read):
//     [libc: read], main_command_loop, main, [libc: __libc_start_call_main,
//     __libc_start_main_impl], _start
//   "recurser" (state S, wait_syscall pause):
//     [libc: pause], recurser_block, recurser_wait (INLINED into level_9, inlined=true), level_9,
//     level_8, level_7, level_6, level_5, level_4, level_3, level_2, level_1, level_0,
//     recurser_main, start_thread, __clone3
//     The frame recurser_wait is at the line marked MARK:recurser_block_call below.
//     The frame level_4 is at the line marked MARK:level_4_call below.
//   "condwait" (state S, wait_syscall futex, wait_address inside the pthread_cond_t `cond`):
//     [libc: ... pthread_cond_wait], condwait_block, condwait_main, start_thread, __clone3
//   "sleeper"  (state S, wait_syscall clock_nanosleep):
//     [libc: clock_nanosleep, nanosleep], sleeper_block, sleeper_main, start_thread, __clone3
//   "spinner"  (state R):
//     spin, spinner_main, start_thread, __clone3
//   "mutexwait" (state S, wait_syscall futex, wait_address inside the pthread_mutex_t `mutex`,
//                which main holds for ever):
//     [libc: ... pthread_mutex_lock], mutexwait_block, mutexwait_main, start_thread, __clone3
//   "sigwaiter" (state S, wait_syscall read): blocked inside a SIGUSR2 handler that interrupted a
//                busy loop; the signal frame is in the middle:
//     [libc: read], handler_block, sigusr2_handler, [libc: __restore_rt], sig_busy_loop,
//     sigwaiter_main, start_thread, __clone3
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "target_util.h"

static pthread_mutex_t cond_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static volatile unsigned long spin_count;
static volatile sig_atomic_t in_handler;
static atomic_int in_busy_loop;
static int never_pipe[2];  // nobody ever writes to it
static atomic_int tids[8];
static volatile unsigned long level_touch[10];  // each level touches its own slot: no folding

enum { T_MAIN, T_RECURSER, T_CONDWAIT, T_SLEEPER, T_SPINNER, T_MUTEXWAIT, T_SIGWAITER, T_COUNT };

static void publish_tid(int slot) { atomic_store(&tids[slot], target_gettid()); }

// ---- recurser -------------------------------------------------------------------------------
NOINLINE void recurser_block(void) {
  pause();
  KEEP_FRAME();
}

static inline __attribute__((always_inline)) void recurser_wait(void) {
  level_touch[9]++;
  recurser_block();  // MARK:recurser_block_call
  KEEP_FRAME();
}

#define LEVEL(n, next)            \
  NOINLINE void level_##n(void) { \
    level_touch[n]++;             \
    next();                       \
    KEEP_FRAME();                 \
  }

NOINLINE void level_9(void) {
  recurser_wait();
  KEEP_FRAME();
}
LEVEL(8, level_9)
LEVEL(7, level_8)
LEVEL(6, level_7)
LEVEL(5, level_6)
NOINLINE void level_4(void) {
  level_touch[4]++;
  level_5();  // MARK:level_4_call
  KEEP_FRAME();
}
LEVEL(3, level_4)
LEVEL(2, level_3)
LEVEL(1, level_2)
LEVEL(0, level_1)

NOINLINE void* recurser_main(void* arg) {
  (void)arg;
  publish_tid(T_RECURSER);
  level_0();
  KEEP_FRAME();
  return NULL;
}

// ---- condwait --------------------------------------------------------------------------------
NOINLINE void condwait_block(void) {
  pthread_mutex_lock(&cond_lock);
  for (;;) {  // nobody signals `cond`; the loop only guards against spurious wakeups
    pthread_cond_wait(&cond, &cond_lock);
    KEEP_FRAME();
  }
}

NOINLINE void* condwait_main(void* arg) {
  (void)arg;
  publish_tid(T_CONDWAIT);
  condwait_block();
  KEEP_FRAME();
  return NULL;
}

// ---- sleeper ---------------------------------------------------------------------------------
NOINLINE void sleeper_block(void) {
  for (;;) {
    struct timespec ts = {.tv_sec = 1000000, .tv_nsec = 0};
    nanosleep(&ts, NULL);
    KEEP_FRAME();
  }
}

NOINLINE void* sleeper_main(void* arg) {
  (void)arg;
  publish_tid(T_SLEEPER);
  sleeper_block();
  KEEP_FRAME();
  return NULL;
}

// ---- spinner ---------------------------------------------------------------------------------
NOINLINE void spin(void) {
  for (;;) {
    spin_count++;
  }
}

NOINLINE void* spinner_main(void* arg) {
  (void)arg;
  publish_tid(T_SPINNER);
  spin();
  KEEP_FRAME();
  return NULL;
}

// ---- mutexwait -------------------------------------------------------------------------------
NOINLINE void mutexwait_block(void) {
  pthread_mutex_lock(&mutex);  // main holds it for ever
  KEEP_FRAME();
  pthread_mutex_unlock(&mutex);
}

NOINLINE void* mutexwait_main(void* arg) {
  (void)arg;
  publish_tid(T_MUTEXWAIT);
  mutexwait_block();
  KEEP_FRAME();
  return NULL;
}

// ---- sigwaiter -------------------------------------------------------------------------------
NOINLINE void handler_block(void) {
  char c;
  for (;;) {
    if (read(never_pipe[0], &c, 1) <= 0) {
      KEEP_FRAME();
    }
  }
}

NOINLINE void sigusr2_handler(int sig) {
  (void)sig;
  in_handler = 1;
  handler_block();
  KEEP_FRAME();
}

NOINLINE void sig_busy_loop(void) {
  atomic_store(&in_busy_loop, 1);
  while (!in_handler) {
    KEEP_FRAME();
  }
}

NOINLINE void* sigwaiter_main(void* arg) {
  (void)arg;
  publish_tid(T_SIGWAITER);
  sig_busy_loop();  // never returns: the handler that ends the loop never returns
  KEEP_FRAME();
  return NULL;
}

// ---- main ------------------------------------------------------------------------------------
static void wait_blocked_in(int slot, long nr) {
  while (atomic_load(&tids[slot]) == 0) {
    sched_yield();
  }
  target_wait_blocked_in(atomic_load(&tids[slot]), nr);
}

// Reads stdin with read(2) directly (no stdio buffering frames between read and this function).
NOINLINE void main_command_loop(void) {
  char line[256];
  size_t len = 0;
  for (;;) {
    ssize_t n = read(0, line + len, sizeof line - 1 - len);
    KEEP_FRAME();
    if (n <= 0) {
      return;
    }
    len += (size_t)n;
    char* nl;
    while ((nl = memchr(line, '\n', len)) != NULL) {
      *nl = '\0';
      if (strcmp(line, "ping") == 0) {
        printf("pong\n");
      } else if (strcmp(line, "quit") == 0) {
        printf("bye\n");
        fflush(stdout);
        exit(0);
      } else {
        printf("unknown\n");
      }
      fflush(stdout);
      size_t used = (size_t)(nl - line) + 1;
      memmove(line, nl + 1, len - used);
      len -= used;
    }
    if (len == sizeof line - 1) {
      len = 0;  // an over-long line is dropped
    }
  }
}

static pthread_t start(const char* name, void* (*fn)(void*)) {
  pthread_t t;
  if (pthread_create(&t, NULL, fn, NULL) != 0) {
    perror("pthread_create");
    exit(1);
  }
  pthread_setname_np(t, name);
  return t;
}

int main(void) {
  if (pipe(never_pipe) != 0) {
    perror("pipe");
    return 1;
  }
  // SIGUSR2 is sent with pthread_kill to the sigwaiter thread alone.
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = sigusr2_handler;
  sigaction(SIGUSR2, &sa, NULL);

  publish_tid(T_MAIN);
  pthread_mutex_lock(&mutex);  // held for ever: mutexwait blocks on it

  start("recurser", recurser_main);
  start("condwait", condwait_main);
  start("sleeper", sleeper_main);
  start("spinner", spinner_main);
  start("mutexwait", mutexwait_main);
  pthread_t sigwaiter = start("sigwaiter", sigwaiter_main);

  while (atomic_load(&in_busy_loop) == 0) {  // the signal must interrupt sig_busy_loop
    sched_yield();
  }
  pthread_kill(sigwaiter, SIGUSR2);

  wait_blocked_in(T_RECURSER, SYS_pause);
  wait_blocked_in(T_CONDWAIT, SYS_futex);
  wait_blocked_in(T_SLEEPER, SYS_clock_nanosleep);
  wait_blocked_in(T_MUTEXWAIT, SYS_futex);
  wait_blocked_in(T_SIGWAITER, SYS_read);
  while (spin_count == 0) {
    sched_yield();
  }

  printf(
      "ready pid=%d cond=%p cond_size=%zu mutex=%p mutex_size=%zu main=%d recurser=%d "
      "condwait=%d sleeper=%d spinner=%d mutexwait=%d sigwaiter=%d\n",
      (int)getpid(), (void*)&cond, sizeof cond, (void*)&mutex, sizeof mutex, tids[T_MAIN],
      tids[T_RECURSER], tids[T_CONDWAIT], tids[T_SLEEPER], tids[T_SPINNER], tids[T_MUTEXWAIT],
      tids[T_SIGWAITER]);
  fflush(stdout);

  main_command_loop();
  KEEP_FRAME();
  return 0;
}
