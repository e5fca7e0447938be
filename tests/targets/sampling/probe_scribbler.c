// SPDX-License-Identifier: MIT
// probe_scribbler: a target that attacks the memory it shares with profctl (issue 17,
// points 2-4). It finds the probes' shared area in its own /proc/self/maps (the
// "/memfd:profctl-probe-..." mapping) and, on "scribble", writes into it what a hostile
// process would:
//  1. disables its own probes (enabled = 0: the blob then reads nothing else of the area,
//     so the forgeries below cannot crash this process through its own malloc);
//  2. forges every layout field of the control block: huge and negative offsets and
//     capacities, max_probe and the stack budget at their maximum, another owner pid;
//  3. creates and joins threads (profctl registers and forgets each one in the thread
//     table, whose layout the control block now lies about);
//  4. floods the ring for a while with valid records (with the layout it was given), each
//     claiming a 1 MiB stack copy, distinct pointers and sizes: an endless stream;
//  5. meanwhile a thread flips the stack_len of the records being written between a valid
//     and a huge value;
//  6. forges ring_head far ahead of and behind the tail, again and again.
// profctl must read none of it as a layout, stay bounded in memory, give up on the ring
// with a note, and still restore this process.
// Protocol: "ready pid=P" on stdout; commands on stdin, one line each:
//   alloc N   -> N x malloc(100)+free; "done alloc"
//   scribble  -> the steps above; "done scribble records=R" (records it wrote), or
//                "no area" when no probe mapping is found
//   probes    -> "probes=1" while a profctl-probe mapping is in the maps, else "probes=0"
//   quit / EOF -> exit 0
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "probe/abi/probe_abi.h"
#include "sampling_util.h"

#define STACK_CLAIM (1u << 20)

static int find_area(uint64_t* lo, uint64_t* hi) {
  FILE* f = fopen("/proc/self/maps", "r");
  if (f == NULL) {
    return 0;
  }
  char line[512];
  int found = 0;
  while (!found && fgets(line, sizeof line, f) != NULL) {
    unsigned long long a = 0, b = 0;
    if (strstr(line, "/memfd:profctl-probe") != NULL && sscanf(line, "%llx-%llx", &a, &b) == 2) {
      *lo = a;
      *hi = b;
      found = 1;
    }
  }
  fclose(f);
  return found;
}

static void* nothing(void* arg) { return arg; }

// The layout as profctl wrote it, read before the forgeries.
struct layout {
  struct probe_ctl* ctl;
  unsigned char* ring;
  uint64_t ring_size;
};

static _Atomic(struct probe_record*) g_flip_target;
static atomic_int g_stop_flipping;

static void* flipper(void* arg) {
  (void)arg;
  uint64_t n = 0;
  while (!atomic_load(&g_stop_flipping)) {
    struct probe_record* r = atomic_load(&g_flip_target);
    if (r != NULL) {
      __atomic_store_n(&r->stack_len, (++n & 1) ? (1ull << 40) : 64, __ATOMIC_RELAXED);
    }
  }
  return NULL;
}

// One record as blob.c writes it (reserve with the tail profctl publishes, padding at the
// wrap, body, then the committed header); 0 when the ring is full.
static int write_record(const struct layout* l, uint64_t i) {
  struct probe_ctl* c = l->ctl;
  const uint64_t len = sizeof(struct probe_record) + STACK_CLAIM;
  uint64_t head = __atomic_load_n(&c->ring_head, __ATOMIC_RELAXED);
  const uint64_t tail = __atomic_load_n(&c->ring_tail, __ATOMIC_ACQUIRE);
  const uint64_t off = head & (l->ring_size - 1);
  const uint64_t room = l->ring_size - off;
  const uint64_t total = len <= room ? len : room + len;
  if (head + total - tail > l->ring_size) {
    return 0;
  }
  if (!__atomic_compare_exchange_n(&c->ring_head, &head, head + total, 0, __ATOMIC_ACQ_REL,
                                   __ATOMIC_RELAXED)) {
    return 0;
  }
  uint64_t at = off;
  if (total != len) {
    __atomic_store_n((uint64_t*)(l->ring + off), room | ((uint64_t)PROBE_REC_STATE_PADDING << 32),
                     __ATOMIC_RELEASE);
    at = 0;
  }
  struct probe_record* r = (struct probe_record*)(l->ring + at);
  atomic_store(&g_flip_target, r);
  r->kind = PROBE_KIND_MALLOC;
  r->flags = PROBE_REC_ALLOC | PROBE_REC_STACK_BOUNDS;
  r->site = 0;
  r->pid = getpid();
  r->tid = gettid();
  r->value = 16 + i * 8;             // a new size: a new bucket
  r->ptr = 0x100000000ull + i * 64;  // a new pointer: a new live allocation
  r->rsp = (uint64_t)(uintptr_t)&r;
  r->rip = 0x400000 + (i & 0xffff) * 16;
  r->stack_len = STACK_CLAIM;
  memset(r + 1, (int)(i & 0xff), STACK_CLAIM);
  __atomic_store_n(&r->header, len | ((uint64_t)PROBE_REC_STATE_COMMITTED << 32), __ATOMIC_RELEASE);
  return 1;
}

static void scribble(void) {
  uint64_t lo = 0, hi = 0;
  if (!find_area(&lo, &hi)) {
    printf("no area\n");
    return;
  }
  struct layout l;
  l.ctl = (struct probe_ctl*)(uintptr_t)lo;
  l.ring = (unsigned char*)(uintptr_t)(lo + l.ctl->ring_offset);
  l.ring_size = l.ctl->ring_size;
  struct probe_ctl* c = l.ctl;
  // 1. Our own probes off first.
  __atomic_store_n(&c->enabled, 0, __ATOMIC_RELEASE);
  // 2. Forged layout.
  c->threads_offset = ~0ull - 4095;
  c->threads_capacity = ~0ull;
  c->ptrs_offset = 1ull << 62;
  c->ptrs_capacity = 1ull << 62;
  c->filter_offset = ~0ull;
  c->filter_capacity = 3;
  c->ring_offset = 1ull << 62;
  c->ring_size = ~0ull;
  c->area_size = ~0ull;
  c->max_probe = ~0u;
  c->stack_bytes = ~0u;
  c->owner_pid = 1;
  // 3. Threads, so that profctl registers and forgets them.
  for (int i = 0; i < 16; ++i) {
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) == 0) {
      pthread_join(t, NULL);
    }
  }
  // 4 and 5. The flood, with a flipper.
  pthread_t flip;
  atomic_store(&g_stop_flipping, 0);
  const int flipping = pthread_create(&flip, NULL, flipper, NULL) == 0;
  uint64_t written = 0;
  const long long end = sampling_clock_ns(CLOCK_MONOTONIC) + 1500000000LL;
  for (uint64_t i = 0; sampling_clock_ns(CLOCK_MONOTONIC) < end; ++i) {
    written += (uint64_t)write_record(&l, i);
  }
  atomic_store(&g_stop_flipping, 1);
  if (flipping) {
    pthread_join(flip, NULL);
  }
  atomic_store(&g_flip_target, NULL);
  // 6. Forged heads, far ahead and behind, until profctl must have given up.
  for (int i = 0; i < 20; ++i) {
    const uint64_t tail = __atomic_load_n(&c->ring_tail, __ATOMIC_ACQUIRE);
    __atomic_store_n(&c->ring_head, (i & 1) ? tail - 4096 : tail + (1ull << 61), __ATOMIC_RELEASE);
    usleep(20000);
  }
  printf("done scribble records=%llu\n", (unsigned long long)written);
}

int main(void) {
  sampling_die_with_parent();
  setvbuf(stdout, NULL, _IOLBF, 0);
  printf("ready pid=%d\n", getpid());
  char line[256];
  while (fgets(line, sizeof line, stdin) != NULL) {
    if (strncmp(line, "alloc", 5) == 0) {
      const int n = atoi(line + 5);
      for (int i = 0; i < n; ++i) {
        void* volatile p = malloc(100);
        free(p);
      }
      printf("done alloc\n");
    } else if (strncmp(line, "scribble", 8) == 0) {
      scribble();
    } else if (strncmp(line, "probes", 6) == 0) {
      uint64_t lo = 0, hi = 0;
      printf("probes=%d\n", find_area(&lo, &hi));
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    } else {
      printf("unknown command\n");
    }
  }
  return 0;
}
