// SPDX-License-Identifier: MIT
// probe_busy: an executable with its own malloc (found before libc's, so it is the one
// profctl probes) that can be made to take seconds: a thread stays inside a probed call
// across the end of a capture, so profctl cannot unmap its probe areas and must say what
// it left. A worker calls malloc/free in a loop and checks its blocks.
// Protocol: "ready pid=P" on stdout; commands on stdin:
//   slow MS -> the worker's next malloc sleeps MS ms inside malloc; "slow armed"
//   status  -> "status calls=N slow=S bad=B" (S: slow calls finished, B: corrupt blocks)
//   quit    -> exit 0 when no block was ever corrupt, 1 otherwise
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sampling_util.h"

extern void* __libc_malloc(size_t);

static atomic_int g_slow_ms;
static atomic_long g_calls, g_slow_done, g_bad;

__attribute__((noinline)) void* malloc(size_t n) {
  int ms = atomic_exchange(&g_slow_ms, 0);
  if (ms > 0) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
    atomic_fetch_add(&g_slow_done, 1);
  }
  return __libc_malloc(n);
}

static void* worker(void* arg) {
  (void)arg;
  for (;;) {
    size_t n = 64 + (size_t)(atomic_load(&g_calls) % 512);
    unsigned char* p = malloc(n);
    if (p == NULL) {
      atomic_fetch_add(&g_bad, 1);
      continue;
    }
    memset(p, 0x5a, n);
    for (size_t i = 0; i < n; ++i) {
      if (p[i] != 0x5a) {
        atomic_fetch_add(&g_bad, 1);
        break;
      }
    }
    free(p);
    atomic_fetch_add(&g_calls, 1);
    usleep(200);
  }
  return NULL;
}

int main(void) {
  sampling_die_with_parent();
  pthread_t t;
  pthread_create(&t, NULL, worker, NULL);
  printf("ready pid=%d\n", (int)getpid());
  fflush(stdout);
  char line[128];
  while (fgets(line, sizeof line, stdin) != NULL) {
    int ms = 0;
    if (sscanf(line, "slow %d", &ms) == 1) {
      atomic_store(&g_slow_ms, ms);
      printf("slow armed\n");
    } else if (strncmp(line, "status", 6) == 0) {
      printf("status calls=%ld slow=%ld bad=%ld\n", atomic_load(&g_calls),
             atomic_load(&g_slow_done), atomic_load(&g_bad));
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    }
    fflush(stdout);
  }
  return atomic_load(&g_bad) == 0 ? 0 : 1;
}
