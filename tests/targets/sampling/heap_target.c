// SPDX-License-Identifier: MIT
// heap_target MODE: allocations the heap tests know exactly.
// Protocol: "ready pid=P" on stdout; commands on stdin, one line each:
//   run      -> one round of the exact workload below, then "done round=N"
//   churn N [C] -> N threads x C (default 100000) malloc(64)+free in a tight loop, then
//               "done churn"
//   fork N   -> forks N children, one every 2 ms, each allocating and exiting 0 unless its
//               allocations go wrong; then "done fork ok=K" (K children exited 0)
//   exec     -> execs /bin/true (the heap profile must end cleanly)
//   bulk N SIZE KEEP -> alloc_bulk: N x malloc(SIZE); block i is kept (never freed) when
//               i % KEEP == 0, else freed at once; then "done bulk kept=K"
//   spin N   -> starts N threads that malloc(64)+free in spin_alloc until the process
//               ends (so that an exit finds threads inside the probes); "done spin"
//   sigalloc start -> blocks SIGRTMIN in the main thread and starts a thread that calls
//               alloc_signalled (16 x malloc(24), then 16 frees) once per millisecond with
//               SIGRTMIN unblocked, so the signals land on the allocating thread;
//               "done sigalloc started"
//   sigcount -> "signals=S" (SIGRTMIN deliveries counted by the handler, which only counts)
//   sigalloc stop -> stops and joins that thread, unblocks SIGRTMIN again;
//               "done sigalloc rounds=R signals=S" (R calls of alloc_signalled)
//   twins N  -> run_twins: 2N calls alternating twin_a and twin_b, each calling alloc_twin
//               (malloc(72) then free); the twins' frames are alike, so every malloc
//               entry has the same rsp and the same return address: only a word deeper
//               in the stack tells the two stacks apart; then "done twins"
//   exit N   -> exit(N) at once (atexit handlers and all, probes still in)
//   quit / EOF -> exit 0
// The exact workload of one round ("run"), from functions named for what they do:
//   alloc_small:    100 x malloc(100)   kept (live at the end)
//   alloc_freed:    50  x malloc(4096)  all freed
//   alloc_calloc:   20  x calloc(8, 32) (256 bytes) kept
//   alloc_realloc:  10  x malloc(64) then realloc to 8192 (kept)
//   alloc_aligned:  5   x posix_memalign(64, 1000) kept
//   alloc_thread:   on a second thread: 30 x malloc(200) kept
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sampling_util.h"

// Every allocation of the workload must really happen. GCC deletes a malloc whose result
// is unused, and a pointer stored only into a static array that nothing reads is unused
// (the array is write-only, so the stores go first): without this, malloc(100), calloc and
// the thread's malloc(200) were all compiled away. The empty asm takes the pointer as an
// input and may read memory, so neither the call nor the store can be dropped.
static inline void escape(void* p) { asm volatile("" : : "r"(p) : "memory"); }

static void* keep[1 << 16];
static size_t nkeep;
static void hold(void* p) {
  escape(p);
  if (nkeep < sizeof keep / sizeof keep[0]) {
    keep[nkeep++] = p;
  }
}

NOINLINE void alloc_small(void) {
  for (int i = 0; i < 100; ++i)
    hold(malloc(100));
  KEEP_FRAME();
}
NOINLINE void alloc_freed(void) {
  void* p[50];
  for (int i = 0; i < 50; ++i) {
    p[i] = malloc(4096);
    escape(p[i]);
  }
  for (int i = 0; i < 50; ++i)
    free(p[i]);
  KEEP_FRAME();
}
NOINLINE void alloc_calloc(void) {
  for (int i = 0; i < 20; ++i)
    hold(calloc(8, 32));
  KEEP_FRAME();
}
NOINLINE void alloc_realloc(void) {
  for (int i = 0; i < 10; ++i) {
    void* p = malloc(64);
    hold(realloc(p, 8192));
  }
  KEEP_FRAME();
}
NOINLINE void alloc_aligned(void) {
  for (int i = 0; i < 5; ++i) {
    void* p = NULL;
    if (posix_memalign(&p, 64, 1000) == 0)
      hold(p);
  }
  KEEP_FRAME();
}
NOINLINE static void* alloc_thread(void* arg) {
  (void)arg;
  for (int i = 0; i < 30; ++i)
    hold(malloc(200));
  KEEP_FRAME();
  return NULL;
}

static int churn_count = 100000;
NOINLINE static void* churn_loop(void* arg) {
  (void)arg;
  for (int i = 0; i < churn_count; ++i) {
    void* p = malloc(64);
    *(volatile char*)p = 1;
    free(p);
  }
  return NULL;
}

// N blocks of SIZE from one function: the default-rate statistics test knows the totals.
// The kept blocks are never freed (they stay in use until the process ends).
NOINLINE static long alloc_bulk(long n, size_t size, long keep_every) {
  long kept = 0;
  for (long i = 0; i < n; ++i) {
    void* p = malloc(size);
    escape(p);
    if (keep_every > 0 && i % keep_every == 0) {
      ++kept;
    } else {
      free(p);
    }
  }
  KEEP_FRAME();
  return kept;
}

NOINLINE static void alloc_twin(int which) {
  void* p = malloc(72);
  escape(p);
  free(p);
  escape((void*)(long)which);
  KEEP_FRAME();
}
// Not alike enough for GCC to fold them into one (the argument differs).
NOINLINE static void twin_a(void) {
  alloc_twin(1);
  KEEP_FRAME();
}
NOINLINE static void twin_b(void) {
  alloc_twin(2);
  KEEP_FRAME();
}
NOINLINE static void run_twins(long n) {
  void (*volatile pick[2])(void) = {twin_a, twin_b};
  for (long i = 0; i < 2 * n; ++i)
    pick[i & 1]();
  KEEP_FRAME();
}

NOINLINE static void spin_alloc(void) {
  for (;;) {
    void* p = malloc(64);
    *(volatile char*)p = 1;
    free(p);
  }
}
static void* spin_main(void* arg) {
  (void)arg;
  spin_alloc();
  return NULL;
}

// The signal test: the handler only counts (lock-free, async-signal-safe); the thread that
// receives the signals allocates and frees between them.
static atomic_long rt_count;
static void on_rt(int sig) {
  (void)sig;
  atomic_fetch_add(&rt_count, 1);
}
static atomic_int sigalloc_stop;
static long sigalloc_rounds;
static pthread_t sigalloc_thread;

NOINLINE void alloc_signalled(void) {
  void* p[16];
  for (int i = 0; i < 16; ++i) {
    p[i] = malloc(24);
    escape(p[i]);
  }
  for (int i = 0; i < 16; ++i)
    free(p[i]);
  KEEP_FRAME();
}
static void* sigalloc_main(void* arg) {
  (void)arg;
  sigset_t rt;
  sigemptyset(&rt);
  sigaddset(&rt, SIGRTMIN);
  pthread_sigmask(SIG_UNBLOCK, &rt, NULL);
  while (!atomic_load(&sigalloc_stop)) {
    alloc_signalled();
    ++sigalloc_rounds;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000000};
    nanosleep(&ts, NULL);  // a signal cuts it short (EINTR): fine
  }
  return NULL;
}

static int fork_children(int n) {
  int ok = 0;
  for (int i = 0; i < n; ++i) {
    pid_t c = fork();
    if (c == 0) {
      // The child allocates and checks its memory: a probe left half-installed in it would
      // crash it or break malloc.
      for (int k = 0; k < 1000; ++k) {
        char* p = malloc(32 + k);
        memset(p, k, 32 + k);
        escape(p);
        if (p[31] != (char)k)
          _exit(3);
        free(p);
      }
      _exit(0);
    }
    int st = 0;
    if (c > 0 && waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0)
      ++ok;
    usleep(2000);
  }
  return ok;
}

int main(void) {
  sampling_die_with_parent();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_rt;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGRTMIN, &sa, NULL);
  char line[256];
  snprintf(line, sizeof line, "ready pid=%d", (int)getpid());
  target_say(line);
  struct target_lines in = {0};
  int rounds = 0;
  while (target_next_line(&in, line, sizeof line) != NULL) {
    char out[128];
    if (strcmp(line, "run") == 0) {
      alloc_small();
      alloc_freed();
      alloc_calloc();
      alloc_realloc();
      alloc_aligned();
      pthread_t t;
      pthread_create(&t, NULL, alloc_thread, NULL);
      pthread_join(t, NULL);
      snprintf(out, sizeof out, "done round=%d", ++rounds);
      target_say(out);
    } else if (strncmp(line, "twins ", 6) == 0) {
      run_twins(atol(line + 6));
      target_say("done twins");
    } else if (strncmp(line, "churn ", 6) == 0) {
      int n = atoi(line + 6);
      const char* count = strchr(line + 6, ' ');
      churn_count = count ? atoi(count + 1) : 100000;
      pthread_t t[64];
      for (int i = 0; i < n && i < 64; ++i)
        pthread_create(&t[i], NULL, churn_loop, NULL);
      for (int i = 0; i < n && i < 64; ++i)
        pthread_join(t[i], NULL);
      target_say("done churn");
    } else if (strncmp(line, "fork ", 5) == 0) {
      snprintf(out, sizeof out, "done fork ok=%d", fork_children(atoi(line + 5)));
      target_say(out);
    } else if (strcmp(line, "exec") == 0) {
      execl("/bin/true", "true", (char*)NULL);
      target_say("exec failed");
    } else if (strncmp(line, "bulk ", 5) == 0) {
      long n = 0, keep_every = 0;
      size_t size = 0;
      if (sscanf(line + 5, "%ld %zu %ld", &n, &size, &keep_every) != 3) {
        target_say("bad bulk");
        continue;
      }
      snprintf(out, sizeof out, "done bulk kept=%ld", alloc_bulk(n, size, keep_every));
      target_say(out);
    } else if (strncmp(line, "spin ", 5) == 0) {
      for (int i = atoi(line + 5); i > 0; --i) {
        pthread_t t;
        pthread_create(&t, NULL, spin_main, NULL);
        pthread_detach(t);
      }
      target_say("done spin");
    } else if (strcmp(line, "sigalloc start") == 0) {
      sigset_t rt;
      sigemptyset(&rt);
      sigaddset(&rt, SIGRTMIN);
      pthread_sigmask(SIG_BLOCK, &rt, NULL);
      atomic_store(&sigalloc_stop, 0);
      sigalloc_rounds = 0;
      pthread_create(&sigalloc_thread, NULL, sigalloc_main, NULL);
      target_say("done sigalloc started");
    } else if (strcmp(line, "sigcount") == 0) {
      snprintf(out, sizeof out, "signals=%ld", atomic_load(&rt_count));
      target_say(out);
    } else if (strcmp(line, "sigalloc stop") == 0) {
      atomic_store(&sigalloc_stop, 1);
      pthread_join(sigalloc_thread, NULL);
      sigset_t rt;
      sigemptyset(&rt);
      sigaddset(&rt, SIGRTMIN);
      pthread_sigmask(SIG_UNBLOCK, &rt, NULL);
      snprintf(out, sizeof out, "done sigalloc rounds=%ld signals=%ld", sigalloc_rounds,
               atomic_load(&rt_count));
      target_say(out);
    } else if (strncmp(line, "exit ", 5) == 0) {
      exit(atoi(line + 5));
    } else if (strcmp(line, "quit") == 0) {
      break;
    }
  }
  return 0;
}
