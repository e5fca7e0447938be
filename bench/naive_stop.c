// SPDX-License-Identifier: MIT
// The naive floor of a stop of the world, for bench/stack_bench.py (see bench/README.md).
//
//   naive_stop PID [--no-realtime]
//
// What a minimal tracer does to take every thread's registers and stack: seize every
// thread, then, timed (at SCHED_FIFO 1 like profctl's window unless --no-realtime):
// PTRACE_INTERRUPT each thread, waitpid(__WALL) once per thread, PTRACE_GETREGS each,
// one process_vm_readv of every stack (rsp up to the thread pointer or the end of its
// mapping, as profctl copies), PTRACE_DETACH each. No /proc reads, no bookkeeping, no
// care for signals beyond handing a signal stop's signal back at detach. Prints one line:
//   world_stopped_ns=N stop_ns=N capture_ns=N resume_ns=N threads=N stack_bytes=N
// It is a yardstick, not a tool: a thread it cannot stop within 2 s makes it fail.
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { kMaxThreads = 8192, kMaxMaps = 8192 };

struct map {
  uint64_t start, end;
};

static pid_t g_tids[kMaxThreads];
static int g_sig[kMaxThreads];
static struct user_regs_struct g_regs[kMaxThreads];
static struct map g_maps[kMaxMaps];
static struct iovec g_local[kMaxThreads], g_remote[kMaxThreads];

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int list_threads(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR* d = opendir(path);
  if (d == NULL) {
    return -1;
  }
  int n = 0;
  struct dirent* e;
  while ((e = readdir(d)) != NULL && n < kMaxThreads) {
    if (e->d_name[0] != '.') {
      g_tids[n++] = atoi(e->d_name);
    }
  }
  closedir(d);
  return n;
}

static int read_maps(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/maps", pid);
  FILE* f = fopen(path, "r");
  if (f == NULL) {
    return -1;
  }
  int n = 0;
  char line[4096];
  while (fgets(line, sizeof line, f) != NULL && n < kMaxMaps) {
    unsigned long long s, e;
    if (sscanf(line, "%llx-%llx", &s, &e) == 2) {
      g_maps[n].start = s;
      g_maps[n].end = e;
      ++n;
    }
  }
  fclose(f);
  return n;
}

static uint64_t map_end(int nmaps, uint64_t addr) {
  for (int i = 0; i < nmaps; ++i) {
    if (addr >= g_maps[i].start && addr < g_maps[i].end) {
      return g_maps[i].end;
    }
  }
  return addr;
}

static int index_of(int n, pid_t tid) {
  for (int i = 0; i < n; ++i) {
    if (g_tids[i] == tid) {
      return i;
    }
  }
  return -1;
}

int main(int argc, char** argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: naive_stop PID [--no-realtime]\n");
    return 2;
  }
  const pid_t pid = atoi(argv[1]);
  const int realtime = !(argc > 2 && strcmp(argv[2], "--no-realtime") == 0);
  const int n = list_threads(pid);
  const int nmaps = read_maps(pid);
  if (n <= 0 || nmaps <= 0) {
    fprintf(stderr, "naive_stop: cannot read /proc/%d\n", pid);
    return 1;
  }
  for (int i = 0; i < n; ++i) {
    if (ptrace(PTRACE_SEIZE, g_tids[i], NULL, (void*)(long)PTRACE_O_TRACESYSGOOD) != 0) {
      fprintf(stderr, "naive_stop: PTRACE_SEIZE %d: %s\n", g_tids[i], strerror(errno));
      return 1;
    }
  }
  struct sched_param old_param, fifo = {.sched_priority = 1};
  const int old_policy = sched_getscheduler(0);
  sched_getparam(0, &old_param);
  if (realtime) {
    (void)sched_setscheduler(0, SCHED_FIFO | SCHED_RESET_ON_FORK, &fifo);
  }

  const uint64_t t0 = now_ns();
  for (int i = 0; i < n; ++i) {
    ptrace(PTRACE_INTERRUPT, g_tids[i], NULL, NULL);
  }
  for (int stopped = 0; stopped < n;) {
    int st = 0;
    const pid_t tid = waitpid(-1, &st, __WALL);
    if (tid < 0) {
      fprintf(stderr, "naive_stop: waitpid: %s\n", strerror(errno));
      return 1;
    }
    const int i = index_of(n, tid);
    if (i >= 0 && WIFSTOPPED(st)) {
      const int sig = WSTOPSIG(st);
      // An interrupt stop or a group stop carries no signal to hand back.
      g_sig[i] = (st >> 16) == 0 && sig != SIGTRAP && sig != SIGSTOP ? sig : 0;
      ++stopped;
    }
  }
  const uint64_t t1 = now_ns();
  uint64_t bytes = 0;
  for (int i = 0; i < n; ++i) {
    ptrace(PTRACE_GETREGS, g_tids[i], NULL, &g_regs[i]);
    const uint64_t sp = g_regs[i].rsp;
    uint64_t end = map_end(nmaps, sp);
    if (g_regs[i].fs_base > sp && g_regs[i].fs_base < end) {
      end = g_regs[i].fs_base;
    }
    g_remote[i].iov_base = (void*)sp;
    g_remote[i].iov_len = end - sp;
    g_local[i].iov_base = malloc(end - sp + 1);
    g_local[i].iov_len = end - sp;
  }
  for (int done = 0; done < n; done += IOV_MAX) {
    const int k = n - done < IOV_MAX ? n - done : IOV_MAX;
    const ssize_t got = process_vm_readv(pid, &g_local[done], k, &g_remote[done], k, 0);
    bytes += got > 0 ? (uint64_t)got : 0;
  }
  const uint64_t t2 = now_ns();
  for (int i = 0; i < n; ++i) {
    ptrace(PTRACE_DETACH, g_tids[i], NULL, (void*)(long)g_sig[i]);
  }
  const uint64_t t3 = now_ns();
  if (realtime) {
    (void)sched_setscheduler(0, old_policy, &old_param);
  }
  printf(
      "world_stopped_ns=%llu stop_ns=%llu capture_ns=%llu resume_ns=%llu threads=%d "
      "stack_bytes=%llu\n",
      (unsigned long long)(t3 - t0), (unsigned long long)(t1 - t0), (unsigned long long)(t2 - t1),
      (unsigned long long)(t3 - t2), n, (unsigned long long)bytes);
  return 0;
}
