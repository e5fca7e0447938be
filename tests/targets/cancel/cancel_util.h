// SPDX-License-Identifier: MIT
// Helpers of the cancellation targets (header-only, C and C++): where a waiting thread is,
// and whether profctl's wait probe has its return address in hand (read from the probes'
// own code area, whose layout probe/abi/probe_abi.h fixes).
#ifndef PROFCTL_TESTS_TARGETS_CANCEL_CANCEL_UTIL_H
#define PROFCTL_TESTS_TARGETS_CANCEL_CANCEL_UTIL_H

#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "probe/abi/probe_abi.h"

#ifdef __clang__
#define CANCEL_NOINLINE __attribute__((noinline))
#else
#define CANCEL_NOINLINE __attribute__((noinline, noclone))
#endif

#define CANCEL_SYS_FUTEX 202

static inline int cancel_gettid(void) { return (int)syscall(SYS_gettid); }

static inline void cancel_say(const char* line) {
  fputs(line, stdout);
  fputc('\n', stdout);
  fflush(stdout);
}

// Dies with its parent (the test): a killed test leaves nothing behind.
static inline void cancel_die_with_parent(void) { prctl(PR_SET_PDEATHSIG, SIGKILL); }

// The stack pointer of thread `tid` of this process while it is blocked in a system call
// (the "sp" field of /proc/self/task/TID/syscall), 0 when it is running or gone.
static inline uintptr_t cancel_blocked_sp(int tid) {
  char path[64];
  char buf[512];
  snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
  FILE* f = fopen(path, "r");
  if (!f) {
    return 0;
  }
  unsigned long v[9] = {0};
  long nr = -1;
  if (fgets(buf, sizeof buf, f) && sscanf(buf, "%ld %lx %lx %lx %lx %lx %lx %lx %lx", &nr, &v[0],
                                          &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 9) {
    nr = -1;
  }
  fclose(f);
  return nr == CANCEL_SYS_FUTEX ? (uintptr_t)v[6] : 0;
}

// The probes' wait-return addresses: the code areas are the anonymous executable mappings
// that start with profctl's blob header (probe/abi/probe_abi.h), which says where
// probe_wait_return is. A hijacked wait's return address is exactly that (other code-area
// addresses can linger in a waiting thread's frames: the entry stub's own return address
// from probe_enter, in slots the wait function never wrote).
struct cancel_returns {
  int n;
  uintptr_t at[16];
};

static inline void cancel_wait_returns(struct cancel_returns* r) {
  r->n = 0;
  FILE* f = fopen("/proc/self/maps", "r");
  if (!f) {
    return;
  }
  char line[512];
  while (r->n < 16 && fgets(line, sizeof line, f)) {
    unsigned long lo = 0;
    unsigned long hi = 0;
    char perms[8] = "";
    unsigned long inode = 1;
    int path_at = 0;
    if (sscanf(line, "%lx-%lx %7s %*s %*s %lu %n", &lo, &hi, perms, &inode, &path_at) < 4) {
      continue;
    }
    const char* path = line + path_at;
    if (perms[0] != 'r' || perms[2] != 'x' || inode != 0 || (*path != '\n' && *path != '\0') ||
        hi - lo < PROBE_BLOB_HEADER_SIZE) {
      continue;
    }
    const volatile uint64_t* header = (const volatile uint64_t*)lo;
    if (header[0] == PROBE_ABI_MAGIC) {
      r->at[r->n++] = lo + header[PROBE_BLOB_WAIT_RETURN_OFFSET / 8];
    }
  }
  fclose(f);
}

// Waits until thread `tid` is blocked in a futex wait, then says whether its stack between
// that wait's stack pointer and `top` (an address in the waiting function's own frame) holds
// the probe's hijacked return address: the wait was entered through the probe.
static inline int cancel_wait_hijacked(int tid, uintptr_t top) {
  uintptr_t sp;
  while ((sp = cancel_blocked_sp(tid)) == 0) {
    sched_yield();
  }
  struct cancel_returns returns;
  cancel_wait_returns(&returns);
  for (uintptr_t at = sp & ~(uintptr_t)7; at + 8 <= top; at += 8) {
    uintptr_t word = *(volatile uintptr_t*)at;
    for (int i = 0; i < returns.n; ++i) {
      if (word == returns.at[i]) {
        return 1;
      }
    }
  }
  return 0;
}

#endif
