// SPDX-License-Identifier: MIT
// The target for bench/wait_bench.py: a lock-heavy workload, mostly uncontended.
// T threads x N iterations; each iteration locks and unlocks the thread's own mutex (never
// contended: the fast path every program runs), and every S-th iteration also takes one
// shared mutex for ~1 us (contended: the slow path that waits in the kernel) and, every
// 4*S-th, waits on a condition variable for a short timed wait (a block event).
// Prints "elapsed_ns E locks L shared X" (CLOCK_MONOTONIC around the workload only).
// With --wait, prints "ready" and waits for a line on stdin before starting.
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long iters = 2000000;
static long shared_every = 100;
static pthread_mutex_t shared = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t cv_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static volatile unsigned long sink;

static long long now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void* worker(void* arg) {
  (void)arg;
  pthread_mutex_t own = PTHREAD_MUTEX_INITIALIZER;
  for (long i = 0; i < iters; ++i) {
    pthread_mutex_lock(&own);
    sink++;
    pthread_mutex_unlock(&own);
    if (i % shared_every == 0) {
      pthread_mutex_lock(&shared);
      long long end = now_ns() + 1000;
      while (now_ns() < end) sink++;
      pthread_mutex_unlock(&shared);
    }
    if (i % (shared_every * 4) == 0) {
      struct timespec until;
      clock_gettime(CLOCK_REALTIME, &until);
      until.tv_nsec += 20000;
      if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
      }
      pthread_mutex_lock(&cv_mu);
      pthread_cond_timedwait(&cv, &cv_mu, &until);
      pthread_mutex_unlock(&cv_mu);
    }
  }
  return NULL;
}

int main(int argc, char** argv) {
  int a = 1;
  int wait = 0;
  if (a < argc && strcmp(argv[a], "--wait") == 0) {
    wait = 1;
    ++a;
  }
  int threads = a < argc ? atoi(argv[a++]) : 4;
  if (a < argc) iters = atol(argv[a++]);
  if (a < argc) shared_every = atol(argv[a++]);
  if (threads < 1 || threads > 256 || iters < 1 || shared_every < 1) {
    fprintf(stderr, "usage: wait_bench_target [--wait] THREADS ITERS SHARED_EVERY\n");
    return 2;
  }
  if (wait) {
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin)) return 1;
  }
  pthread_t t[256];
  long long t0 = now_ns();
  for (int i = 0; i < threads; ++i) pthread_create(&t[i], NULL, worker, NULL);
  for (int i = 0; i < threads; ++i) pthread_join(t[i], NULL);
  long long e = now_ns() - t0;
  printf("elapsed_ns %lld locks %ld shared %ld\n", e, threads * iters,
         threads * (iters / shared_every + 1));
  return 0;
}
