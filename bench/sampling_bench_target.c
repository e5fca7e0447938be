// SPDX-License-Identifier: MIT
// Benchmark target for the sampling-cost benchmark (see bench/SAMPLING.md).
//
//   sampling_bench_target BUSY IDLE
//
// Starts BUSY threads ("busy-N") that run a CPU-bound loop at the bottom of the chain
// b0 -> b1 -> ... -> b15 (16 distinct noinline functions, none a tail call), and IDLE
// threads ("idle-N") that block forever in pthread_cond_wait() at the bottom of the chain
// i0 -> i1 -> i2 -> i3. Every busy thread counts its loop iterations into a counter of
// its own (one cache line each, so that the counters do not share lines).
//
// The expected stack of a busy thread, innermost first:
//   spin (inlined into b15)  b15  b14 ... b0  busy  start_thread  clone3
// and of an idle thread:
//   [futex wait, libc frames]  pthread_cond_wait  i3  i2  i1  i0  idle  start_thread  clone3
//
// Protocol (stdin/stdout, one line each):
//   -> "ready\n"          once every busy thread has counted and every idle thread is
//                          blocked (its /proc task state is 'S')
//   <- "count\n"          -> "<total iterations> <CLOCK_MONOTONIC ns>\n"
//                          (the time at which the counters were read)
//   <- "threads\n"        -> "<busy tids> | <idle tids>\n"
//   <- EOF                the target exits
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

// One counter per busy thread, each on its own cache line (128 bytes: adjacent-line
// prefetch pairs lines on x86).
struct counter {
  _Alignas(128) volatile uint64_t iterations;
};

static struct counter *g_counters;
static pid_t *g_busy_tids;
static pid_t *g_idle_tids;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_never = PTHREAD_COND_INITIALIZER;  // nobody signals it
// Never set: it only keeps the compiler from seeing that spin() never returns (which
// would let it drop the code after every call of the chain).
static volatile int g_stop;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// The work: a short dependent chain of integer operations per iteration (~100 ns), then
// one store to the thread's own counter. Never returns (g_stop is never set).
static inline __attribute__((always_inline)) int spin(int index) {
  volatile uint64_t *counter = &g_counters[index].iterations;
  uint64_t x = (uint64_t)index * 0x9e3779b97f4a7c15u + 1;
  uint64_t n = 0;
  while (!g_stop) {
    for (int k = 0; k < 64; ++k) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
    }
    __asm__ volatile("" : "+r"(x));
    *counter = ++n;
  }
  return (int)x;
}

__attribute__((noinline, noclone)) int b15(int index) {
  __asm__ volatile("# b15" : : "r"(index) : "memory");
  return spin(index) + 1;
}

#define DEFINE_B(n, next)                                                  \
  __attribute__((noinline, noclone)) int b##n(int index) {                 \
    __asm__ volatile("# b" #n : : "r"(index) : "memory");                  \
    int r = b##next(index);                                                \
    __asm__ volatile("" : "+r"(r) : : "memory");                           \
    return r + n;                                                          \
  }

DEFINE_B(14, 15)
DEFINE_B(13, 14)
DEFINE_B(12, 13)
DEFINE_B(11, 12)
DEFINE_B(10, 11)
DEFINE_B(9, 10)
DEFINE_B(8, 9)
DEFINE_B(7, 8)
DEFINE_B(6, 7)
DEFINE_B(5, 6)
DEFINE_B(4, 5)
DEFINE_B(3, 4)
DEFINE_B(2, 3)
DEFINE_B(1, 2)
DEFINE_B(0, 1)

__attribute__((noinline, noclone)) int i3(int index) {
  __asm__ volatile("# i3" : : "r"(index) : "memory");
  pthread_mutex_lock(&g_mu);
  for (;;) {
    pthread_cond_wait(&g_never, &g_mu);  // spurious wake-ups: wait again
  }
  pthread_mutex_unlock(&g_mu);
  return index;
}

#define DEFINE_I(n, next)                                                  \
  __attribute__((noinline, noclone)) int i##n(int index) {                 \
    __asm__ volatile("# i" #n : : "r"(index) : "memory");                  \
    int r = i##next(index);                                                \
    __asm__ volatile("" : "+r"(r) : : "memory");                           \
    return r + n;                                                          \
  }

DEFINE_I(2, 3)
DEFINE_I(1, 2)
DEFINE_I(0, 1)

static void *busy(void *arg) {
  int index = (int)(intptr_t)arg;
  char name[16];
  snprintf(name, sizeof name, "busy-%d", index);
  pthread_setname_np(pthread_self(), name);
  g_busy_tids[index] = (pid_t)syscall(SYS_gettid);
  return (void *)(intptr_t)b0(index);
}

static void *idle(void *arg) {
  int index = (int)(intptr_t)arg;
  char name[16];
  snprintf(name, sizeof name, "idle-%d", index);
  pthread_setname_np(pthread_self(), name);
  g_idle_tids[index] = (pid_t)syscall(SYS_gettid);
  return (void *)(intptr_t)i0(index);
}

// True once the thread's state in /proc/self/task/TID/stat is 'S' (blocked).
static int is_sleeping(pid_t tid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/self/task/%d/stat", (int)tid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return 0;
  }
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) {
    return 0;
  }
  buf[n] = '\0';
  const char *rparen = strrchr(buf, ')');  // comm may contain spaces and parens
  return rparen != NULL && rparen[1] == ' ' && rparen[2] == 'S';
}

static void die(const char *what, int err) {
  fprintf(stderr, "sampling_bench_target: %s: %s\n", what, strerror(err));
  exit(1);
}

static void start(int n, void *(*fn)(void *), const pthread_attr_t *attr) {
  for (int i = 0; i < n; ++i) {
    pthread_t t;
    int err = pthread_create(&t, attr, fn, (void *)(intptr_t)i);
    if (err != 0) {
      die("pthread_create", err);
    }
  }
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: sampling_bench_target BUSY IDLE\n");
    return 1;
  }
  int nbusy = atoi(argv[1]);
  int nidle = atoi(argv[2]);
  if (nbusy < 0 || nidle < 0 || nbusy + nidle == 0) {
    fprintf(stderr, "usage: sampling_bench_target BUSY IDLE (not both 0)\n");
    return 1;
  }
  g_counters = aligned_alloc(128, sizeof(struct counter) * (size_t)(nbusy > 0 ? nbusy : 1));
  memset((void *)g_counters, 0, sizeof(struct counter) * (size_t)(nbusy > 0 ? nbusy : 1));
  g_busy_tids = calloc((size_t)nbusy + 1, sizeof *g_busy_tids);
  g_idle_tids = calloc((size_t)nidle + 1, sizeof *g_idle_tids);

  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  start(nidle, idle, &attr);
  start(nbusy, busy, &attr);

  // Ready: every busy thread has counted, every idle thread is blocked.
  for (;;) {
    int ok = 1;
    for (int i = 0; i < nbusy && ok; ++i) {
      ok = g_busy_tids[i] != 0 && g_counters[i].iterations > 0;
    }
    for (int i = 0; i < nidle && ok; ++i) {
      ok = g_idle_tids[i] != 0 && is_sleeping(g_idle_tids[i]);
    }
    if (ok) {
      break;
    }
    usleep(1000);
  }
  printf("ready\n");
  fflush(stdout);

  char line[64];
  while (fgets(line, sizeof line, stdin) != NULL) {
    if (strcmp(line, "count\n") == 0) {
      uint64_t total = 0;
      for (int i = 0; i < nbusy; ++i) {
        total += g_counters[i].iterations;
      }
      uint64_t t = now_ns();
      printf("%llu %llu\n", (unsigned long long)total, (unsigned long long)t);
    } else if (strcmp(line, "threads\n") == 0) {
      for (int i = 0; i < nbusy; ++i) {
        printf("%d ", (int)g_busy_tids[i]);
      }
      printf("|");
      for (int i = 0; i < nidle; ++i) {
        printf(" %d", (int)g_idle_tids[i]);
      }
      printf("\n");
    } else {
      printf("?\n");
    }
    fflush(stdout);
  }
  return 0;
}
