// SPDX-License-Identifier: MIT
// Benchmark target for `profctl stack` (see bench/README.md).
//
//   stack_bench_target T [--spin]
//
// Starts T worker threads ("worker-N"). Each calls the chain f0 -> f1 -> ... -> f39
// (40 distinct noinline functions, none a tail call) and, in f39, the always_inline
// helper park(), which blocks forever in read() on a pipe that nobody writes to.
// With --spin the workers spin in park() instead of blocking (the same stack, but
// running threads: useful to see what a stop costs when threads are on a CPU).
//
// The expected stack of every worker, innermost first:
//   [read, libc frames]  park (inlined into f39)  f39  f38 ... f0  worker  start_thread  clone3
//
// One more thread, "watchdog", spins on clock_gettime(CLOCK_MONOTONIC) and keeps the
// longest gap between two consecutive reads: while the watchdog is stopped by a tracer
// it cannot read the clock, so the gap is the pause as the target itself sees it.
//
// Protocol (stdin/stdout, one line each):
//   -> "ready\n"         once every worker is parked (blocked: its task state is 'S')
//   <- "gap\n"           -> "<max gap in ns>\n", and the max is reset to 0
//   <- "threads\n"       -> "<worker tids, space separated>\n"
//   <- EOF               the target exits
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { kDepth = 40 };

static int g_spin;
static int g_pipe[2];
static atomic_int g_parked;
static atomic_uint_fast64_t g_max_gap_ns;
static pid_t *g_tids;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// Inlined into f39, so that an inline-aware unwinder shows it as its own frame.
static inline __attribute__((always_inline)) int park(int depth) {
  atomic_fetch_add(&g_parked, 1);
  char c;
  for (;;) {
    if (g_spin) {
      __asm__ volatile("" ::: "memory");
      continue;
    }
    // A ptrace stop restarts the read (ERESTARTSYS); loop anyway for EINTR.
    if (read(g_pipe[0], &c, 1) == 0) {
      return depth;
    }
  }
}

// f39 ends the chain. The others call the next one and then use the result, so the call
// is never a tail call; the asm keeps each body distinct so that no two get folded.
__attribute__((noinline, noclone)) int f39(int depth) {
  __asm__ volatile("" ::: "memory");
  return park(depth + 1) + 1;
}

#define DEFINE_F(n, next)                                                  \
  __attribute__((noinline, noclone)) int f##n(int depth) {                 \
    __asm__ volatile("# f" #n : : "r"(depth) : "memory");                  \
    int r = f##next(depth + 1);                                            \
    __asm__ volatile("" : "+r"(r) : : "memory");                           \
    return r + n;                                                          \
  }

DEFINE_F(38, 39)
DEFINE_F(37, 38)
DEFINE_F(36, 37)
DEFINE_F(35, 36)
DEFINE_F(34, 35)
DEFINE_F(33, 34)
DEFINE_F(32, 33)
DEFINE_F(31, 32)
DEFINE_F(30, 31)
DEFINE_F(29, 30)
DEFINE_F(28, 29)
DEFINE_F(27, 28)
DEFINE_F(26, 27)
DEFINE_F(25, 26)
DEFINE_F(24, 25)
DEFINE_F(23, 24)
DEFINE_F(22, 23)
DEFINE_F(21, 22)
DEFINE_F(20, 21)
DEFINE_F(19, 20)
DEFINE_F(18, 19)
DEFINE_F(17, 18)
DEFINE_F(16, 17)
DEFINE_F(15, 16)
DEFINE_F(14, 15)
DEFINE_F(13, 14)
DEFINE_F(12, 13)
DEFINE_F(11, 12)
DEFINE_F(10, 11)
DEFINE_F(9, 10)
DEFINE_F(8, 9)
DEFINE_F(7, 8)
DEFINE_F(6, 7)
DEFINE_F(5, 6)
DEFINE_F(4, 5)
DEFINE_F(3, 4)
DEFINE_F(2, 3)
DEFINE_F(1, 2)
DEFINE_F(0, 1)

static void *worker(void *arg) {
  int index = (int)(intptr_t)arg;
  char name[16];
  snprintf(name, sizeof name, "worker-%d", index);
  pthread_setname_np(pthread_self(), name);
  g_tids[index] = (pid_t)syscall(SYS_gettid);
  return (void *)(intptr_t)f0(0);
}

static void *watchdog(void *arg) {
  (void)arg;
  pthread_setname_np(pthread_self(), "watchdog");
  uint64_t last = now_ns();
  for (;;) {
    uint64_t t = now_ns();
    uint64_t gap = t - last;
    last = t;
    // Only the watchdog raises the max; the main thread only resets it to 0.
    if (gap > atomic_load_explicit(&g_max_gap_ns, memory_order_relaxed)) {
      atomic_store_explicit(&g_max_gap_ns, gap, memory_order_relaxed);
    }
  }
  return NULL;
}

// True once the thread's state in /proc/self/task/TID/stat is 'S' (it sits in read()).
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

static void die(const char *what) {
  fprintf(stderr, "stack_bench_target: %s: %s\n", what, strerror(errno));
  exit(1);
}

int main(int argc, char **argv) {
  int threads = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--spin") == 0) {
      g_spin = 1;
    } else {
      threads = atoi(argv[i]);
    }
  }
  if (threads <= 0) {
    fprintf(stderr, "usage: stack_bench_target THREADS [--spin]\n");
    return 1;
  }
  if (pipe2(g_pipe, O_CLOEXEC) != 0) {
    die("pipe2");
  }
  g_tids = calloc((size_t)threads, sizeof *g_tids);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  for (int i = 0; i < threads; ++i) {
    pthread_t t;
    errno = pthread_create(&t, &attr, worker, (void *)(intptr_t)i);
    if (errno != 0) {
      die("pthread_create");
    }
  }
  pthread_t wd;
  errno = pthread_create(&wd, &attr, watchdog, NULL);
  if (errno != 0) {
    die("pthread_create");
  }

  // Wait until every worker has entered park() and, unless spinning, blocks in read().
  struct timespec tick = {0, 1000000};
  while (atomic_load(&g_parked) < threads) {
    nanosleep(&tick, NULL);
  }
  if (!g_spin) {
    for (int i = 0; i < threads; ++i) {
      while (!is_sleeping(g_tids[i])) {
        nanosleep(&tick, NULL);
      }
    }
  }
  atomic_store(&g_max_gap_ns, 0);
  printf("ready\n");
  fflush(stdout);

  char line[64];
  while (fgets(line, sizeof line, stdin) != NULL) {
    if (strcmp(line, "gap\n") == 0) {
      uint64_t gap = atomic_exchange(&g_max_gap_ns, 0);
      printf("%llu\n", (unsigned long long)gap);
    } else if (strcmp(line, "threads\n") == 0) {
      for (int i = 0; i < threads; ++i) {
        printf(i == 0 ? "%d" : " %d", (int)g_tids[i]);
      }
      printf("\n");
    } else {
      printf("error: unknown command\n");
    }
    fflush(stdout);
  }
  return 0;
}
