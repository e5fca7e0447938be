// SPDX-License-Identifier: MIT
// fork_churn ROUNDS [WORD...]: a process tree that changes shape as fast as it can, for the
// tests that `profctl run` always ends (tests/integration/sampling/run_end_test.cpp). It is the
// pattern that hung profctl under `stress-ng --mutex`: a forked child creates threads at once,
// so each new thread's first ptrace stop races its creator's clone event.
//
// Each round the root forks a child that at once creates 2 threads contending on a mutex
// (kLocks lock/unlock pairs each, in contend()), forks a grandchild that creates 1 thread of its
// own, joins its 2 threads and exits without waiting for the grandchild: the grandchild is
// orphaned (the root is a child subreaper: it is reparented to the root, which reaps it).
// The root waits for the child, then starts the next round.
//
// Words after ROUNDS:
//   kill        -> every 4th child is SIGKILLed by the root right after its fork, whatever state
//                  it or its new threads are in
//   term-wait   -> SIGTERM stops the rounds: the root waits for every process it started, says
//                  "done" and exits 0
//   term-ignore -> SIGTERM is caught and ignored (counted in "done")
//   clone-parent -> each child also makes a process with clone(CLONE_PARENT): the root's child,
//                  not its creator's; it exits at once (the root reaps it)
//   vfork-block -> before the rounds the root vforks a child that reads stdin (a line or its end)
//                  before it exits: until then the root's only thread waits in vfork, where no
//                  ptrace stop can reach it
// ROUNDS 0: rounds until stdin has a line or reaches its end; the root then does not die with
// its parent (it may outlive profctl): stdin is what ends it.
//
// stdout: "ready pid=P" first; "rounds N" after every 50th round; "done rounds=R threads=T
// terms=S" at the end: R rounds run, T
// threads created by the children that were not killed and their grandchildren (3 a round), S
// SIGTERMs received.
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sampling_util.h"

enum { kLocks = 200 };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int clone_parent;
static volatile unsigned long counter;
static volatile sig_atomic_t term_stop;
static volatile sig_atomic_t terms;
static int term_wait;

NOINLINE void* contend(void* arg) {
  (void)arg;
  for (int i = 0; i < kLocks; ++i) {
    pthread_mutex_lock(&lock);
    counter += 1;
    pthread_mutex_unlock(&lock);
  }
  KEEP_FRAME();
  return NULL;
}

// The grandchild: one thread at once, joined, exit. It was forked while its parent's threads
// took the lock: its copy may be held by a thread it does not have, so it starts a new one.
NOINLINE void grandchild(void) {
  pthread_mutex_init(&lock, NULL);
  pthread_t t;
  if (pthread_create(&t, NULL, contend, NULL) != 0) {
    _exit(2);
  }
  pthread_join(t, NULL);
  _exit(0);
}

// The child: two threads at once, a grandchild, the threads joined, exit (not waiting for the
// grandchild).
NOINLINE void child(void) {
  pthread_t t[2];
  for (int i = 0; i < 2; ++i) {
    if (pthread_create(&t[i], NULL, contend, NULL) != 0) {
      _exit(2);
    }
  }
  if (clone_parent) {
    // A raw clone: only a syscall runs in it, glibc's state is not its own.
    long sibling = syscall(SYS_clone, CLONE_PARENT | SIGCHLD, 0, NULL, NULL, 0);
    if (sibling == 0) {
      syscall(SYS_exit, 0);
    }
  }
  pid_t g = fork();
  if (g == 0) {
    grandchild();
  }
  for (int i = 0; i < 2; ++i) {
    pthread_join(t[i], NULL);
  }
  _exit(g < 0 ? 2 : 0);
}

static void on_term(int sig) {
  (void)sig;
  terms = terms + 1;
  if (term_wait) {
    term_stop = 1;
  }
}

// A line on stdin, or its end (POLLHUP).
static int stdin_says_stop(void) {
  struct pollfd p = {.fd = 0, .events = POLLIN};
  return poll(&p, 1, 0) > 0;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr,
            "usage: fork_churn ROUNDS [kill] [clone-parent] [term-wait|term-ignore] "
            "[vfork-block]\n");
    return 2;
  }
  const long rounds = atol(argv[1]);
  int kill_some = 0;
  int term_handler = 0;
  int vfork_block = 0;
  for (int i = 2; i < argc; ++i) {
    kill_some |= strcmp(argv[i], "kill") == 0;
    vfork_block |= strcmp(argv[i], "vfork-block") == 0;
    clone_parent |= strcmp(argv[i], "clone-parent") == 0;
    term_wait |= strcmp(argv[i], "term-wait") == 0;
    term_handler |= strcmp(argv[i], "term-wait") == 0 || strcmp(argv[i], "term-ignore") == 0;
  }
  if (rounds > 0) {
    sampling_die_with_parent();
  }
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  if (term_handler) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
  }
  printf("ready pid=%d\n", (int)getpid());
  fflush(stdout);
  if (vfork_block) {
    pid_t v = vfork();
    if (v == 0) {
      char buf[64];
      (void)!read(0, buf, sizeof buf);
      _exit(0);
    }
  }

  long done = 0;
  long threads = 0;
  for (; (rounds == 0 || done < rounds) && !term_stop; ++done) {
    if (rounds == 0 && stdin_says_stop()) {
      break;
    }
    pid_t c = fork();
    if (c < 0) {
      perror("fork");
      return 1;
    }
    if (c == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      child();
    }
    const int killed = kill_some && done % 4 == 3;
    if (killed) {
      kill(c, SIGKILL);
    }
    int st = 0;
    while (waitpid(c, &st, 0) < 0 && errno == EINTR) {
    }
    if (!killed) {
      if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "fork_churn: child %d ended with status 0x%x\n", (int)c, st);
        return 1;
      }
      threads += 3;
    }
    // Grandchildren orphaned so far (reparented to us).
    while (waitpid(-1, &st, WNOHANG) > 0) {
    }
    if ((done + 1) % 50 == 0) {
      printf("rounds %ld\n", done + 1);
      fflush(stdout);
    }
  }
  // Every grandchild still running.
  for (;;) {
    int st = 0;
    if (wait(&st) < 0 && errno != EINTR) {
      break;
    }
  }
  printf("done rounds=%ld threads=%ld terms=%d\n", done, threads, (int)terms);
  fflush(stdout);
  return 0;
}
