// SPDX-License-Identifier: MIT
/* The target for bench/heap_bench.py (see bench/HEAP.md): an allocation-heavy workload.
 *
 *   heap_bench_target [--iters N] [--threads T] [--live L] [--wait]
 *
 * T threads (default 2), each doing N iterations (default 1000000) of: malloc of a size
 * drawn from 16..512 bytes (mixed), write to it, then free one random earlier allocation
 * of its own (a slot in a table of L live pointers, default 1000, which starts full), plus
 * a little arithmetic. Every thread does the same fixed work whatever the profiler.
 *
 * The target measures its own elapsed time with CLOCK_MONOTONIC around the workload only
 * (from releasing the threads to the last one joined), so start-up, loading and a
 * profiler's attach are not in it. With --wait it prints "ready" and waits for a line on
 * stdin before it starts (so that an attaching profiler can finish first).
 *
 * Output (one line on stdout, at the end):
 *   elapsed_ns E mallocs M frees F threads T sink S cpu_ns C
 * where M and F count the workload's calls (table fill + loop, and loop + final frees).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long g_iters = 1000000;
static int g_threads = 2;
static int g_live = 1000;
static pthread_barrier_t g_start;

struct worker {
  pthread_t th;
  unsigned id;
  uint64_t mallocs, frees, sink;
} __attribute__((aligned(128)));

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The process's CPU time: with elapsed, how much of the slowdown is the target's own work
 * (the probes' record path) and how much waiting for a CPU or for the profiler. */
static uint64_t cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t xorshift(uint64_t* s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* Mixed small sizes: mostly small (16..128), some medium (..512). */
static inline size_t draw_size(uint64_t r) {
  return (r & 3) ? 16 + (size_t)((r >> 8) % 113) : 16 + (size_t)((r >> 8) % 497);
}

/* noinline: a stack with a few frames of the workload's own above malloc. */
__attribute__((noinline)) static void* alloc_one(size_t n, uint64_t r) {
  unsigned char* p = malloc(n);
  if (p == NULL) {
    abort();
  }
  p[0] = (unsigned char)r;
  p[n - 1] = (unsigned char)(r >> 8);
  return p;
}

__attribute__((noinline)) static void release_one(void* p) { free(p); }

__attribute__((noinline)) static uint64_t work(uint64_t* s) {
  /* A little work between allocations. */
  uint64_t acc = 0;
  for (int i = 0; i < 16; ++i) {
    acc += xorshift(s) >> 3;
  }
  return acc;
}

static void* worker_main(void* arg) {
  struct worker* w = arg;
  uint64_t s = 0x9E3779B97F4A7C15ull * (w->id + 1);
  void** live = calloc((size_t)g_live, sizeof(void*));
  if (live == NULL) {
    abort();
  }
  pthread_barrier_wait(&g_start);
  for (int i = 0; i < g_live; ++i) {
    uint64_t r = xorshift(&s);
    live[i] = alloc_one(draw_size(r), r);
    w->mallocs++;
  }
  for (long i = 0; i < g_iters; ++i) {
    uint64_t r = xorshift(&s);
    void* p = alloc_one(draw_size(r), r);
    w->mallocs++;
    size_t k = (size_t)(xorshift(&s) % (uint64_t)g_live);
    release_one(live[k]);
    w->frees++;
    live[k] = p;
    w->sink += work(&s) + ((unsigned char*)p)[0];
  }
  for (int i = 0; i < g_live; ++i) {
    release_one(live[i]);
    w->frees++;
  }
  free(live);
  return NULL;
}

int main(int argc, char** argv) {
  int wait = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
      g_iters = atol(argv[++i]);
    } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      g_threads = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--live") == 0 && i + 1 < argc) {
      g_live = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--wait") == 0) {
      wait = 1;
    } else {
      fprintf(stderr, "usage: %s [--iters N] [--threads T] [--live L] [--wait]\n", argv[0]);
      return 2;
    }
  }
  if (g_iters < 0 || g_threads < 1 || g_threads > 1024 || g_live < 1) {
    fprintf(stderr, "bad arguments\n");
    return 2;
  }
  struct worker* ws = aligned_alloc(128, sizeof(struct worker) * (size_t)g_threads);
  if (ws == NULL) {
    return 1;
  }
  memset(ws, 0, sizeof(struct worker) * (size_t)g_threads);
  pthread_barrier_init(&g_start, NULL, (unsigned)g_threads + 1);
  for (int t = 0; t < g_threads; ++t) {
    ws[t].id = (unsigned)t;
    if (pthread_create(&ws[t].th, NULL, worker_main, &ws[t]) != 0) {
      return 1;
    }
  }
  if (wait) {
    /* Every thread exists (and waits at the barrier) before "ready". */
    printf("ready\n");
    fflush(stdout);
    char line[64];
    if (fgets(line, sizeof line, stdin) == NULL) {
      return 1;
    }
  }
  uint64_t t0 = now_ns();
  uint64_t c0 = cpu_ns();
  pthread_barrier_wait(&g_start);
  uint64_t mallocs = 0, frees = 0, sink = 0;
  for (int t = 0; t < g_threads; ++t) {
    pthread_join(ws[t].th, NULL);
    mallocs += ws[t].mallocs;
    frees += ws[t].frees;
    sink += ws[t].sink;
  }
  uint64_t t1 = now_ns();
  uint64_t c1 = cpu_ns();
  printf("elapsed_ns %llu mallocs %llu frees %llu threads %d sink %llu cpu_ns %llu\n",
         (unsigned long long)(t1 - t0), (unsigned long long)mallocs,
         (unsigned long long)frees, g_threads, (unsigned long long)(sink & 0xff),
         (unsigned long long)(c1 - c0));
  fflush(stdout);
  free(ws);
  return 0;
}
