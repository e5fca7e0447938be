// SPDX-License-Identifier: MIT
// process_tree MODE: processes that start processes, for the process-tree tests of `profctl run`
// (children followed by default, --no-children) and `profctl attach --children`. The CPU each
// process spends is measured by the process itself (CLOCK_PROCESS_CPUTIME_ID) and printed on
// stderr, so a test knows exactly which pid spent how much in which function.
//   burn-a MS   -> spends MS ms of CPU in burn_a(), prints "burn_a pid=N cpu_ns=M" on stderr
//   burn-b MS   -> the same in burn_b()
//   server      -> prints "ready"; then for each stdin line "fork MS" forks a child that spends MS
//                  ms of CPU in served_request() and exits; the parent waits for it and prints
//                  "done PID CPU_NS" (the child's own measure, through a pipe)
//   bomb N MS   -> forks N children at once, each spending MS ms of CPU in bomb_child(), waits
//                  for all of them and prints "bombed N" on stdout
//   hog         -> spins forever in hog() (a CPU hog to oversubscribe the machine)
//   spawn MS    -> posix_spawn()s itself as "burn-a MS" (glibc: clone(CLONE_VM|CLONE_VFORK), then
//                  exec) and waits for it
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sampling_util.h"

static volatile unsigned long sink;

static long long process_cpu_ns(void) { return sampling_clock_ns(CLOCK_PROCESS_CPUTIME_ID); }

// Spins until the process has used `ms` more milliseconds of CPU; returns the CPU it used.
static inline long long spin_for(long ms) {
  long long start = process_cpu_ns();
  long long end = start + ms * 1000000LL;
  while (process_cpu_ns() < end) {
    for (int i = 0; i < 20000; ++i) {
      sink += (unsigned long)i;
    }
  }
  return process_cpu_ns() - start;
}

NOINLINE long long burn_a(long ms) { return spin_for(ms); }
NOINLINE long long burn_b(long ms) { return spin_for(ms); }
NOINLINE long long served_request(long ms) { return spin_for(ms); }
NOINLINE long long bomb_child(long ms) { return spin_for(ms); }

NOINLINE void hog(void) {
  for (;;) {
    sink += 1;
  }
}

static int server(void) {
  printf("ready\n");
  fflush(stdout);
  char line[128];
  while (fgets(line, sizeof line, stdin) != NULL) {
    long ms = 0;
    if (sscanf(line, "fork %ld", &ms) != 1) {
      printf("unknown\n");
      fflush(stdout);
      continue;
    }
    int fds[2];
    if (pipe(fds) != 0) {
      return 1;
    }
    pid_t child = fork();
    if (child == 0) {
      close(fds[0]);
      long long used = served_request(ms);
      (void)!write(fds[1], &used, sizeof used);
      _exit(0);
    }
    close(fds[1]);
    long long used = 0;
    (void)!read(fds[0], &used, sizeof used);
    close(fds[0]);
    int st = 0;
    waitpid(child, &st, 0);
    printf("done %d %lld\n", (int)child, used);
    fflush(stdout);
  }
  return 0;
}

static int bomb(int n, long ms) {
  for (int i = 0; i < n; ++i) {
    if (fork() == 0) {
      bomb_child(ms);
      _exit(0);
    }
  }
  while (wait(NULL) > 0) {
  }
  printf("bombed %d\n", n);
  return 0;
}

extern char** environ;

static int spawn_burn(const char* self, const char* ms) {
  char* args[] = {(char*)self, (char*)"burn-a", (char*)ms, NULL};
  pid_t child = 0;
  if (posix_spawn(&child, self, NULL, NULL, args, environ) != 0) {
    return 1;
  }
  int st = 0;
  waitpid(child, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 1;
}

int main(int argc, char** argv) {
  sampling_die_with_parent();
  if (argc >= 3 && (strcmp(argv[1], "burn-a") == 0 || strcmp(argv[1], "burn-b") == 0)) {
    const long ms = atol(argv[2]);
    const int a = strcmp(argv[1], "burn-a") == 0;
    long long used = a ? burn_a(ms) : burn_b(ms);
    fprintf(stderr, "%s pid=%d cpu_ns=%lld\n", a ? "burn_a" : "burn_b", (int)getpid(), used);
    return 0;
  }
  if (argc >= 2 && strcmp(argv[1], "server") == 0) {
    return server();
  }
  if (argc >= 4 && strcmp(argv[1], "bomb") == 0) {
    return bomb(atoi(argv[2]), atol(argv[3]));
  }
  if (argc >= 3 && strcmp(argv[1], "spawn") == 0) {
    return spawn_burn(argv[0], argv[2]);
  }
  if (argc >= 2 && strcmp(argv[1], "hog") == 0) {
    hog();
  }
  fprintf(stderr, "usage: process_tree burn-a MS | burn-b MS | server | bomb N MS | hog | spawn MS\n");
  return 2;
}
