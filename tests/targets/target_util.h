// SPDX-License-Identifier: MIT
// Helpers shared by the test targets (header-only, C). Nothing here sleeps to wait: a target
// reports "ready" only once /proc says its threads are where the comments say.
#ifndef PROFCTL_TESTS_TARGETS_TARGET_UTIL_H
#define PROFCTL_TESTS_TARGETS_TARGET_UTIL_H

#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef __clang__
#define NOINLINE __attribute__((noinline))
#else
// noclone: no ".constprop"/".part" copies, so the symbol names are exactly the source names.
#define NOINLINE __attribute__((noinline, noclone))
#endif
// An empty asm after a call keeps it a call (no tail call), so the caller's frame stays.
#define KEEP_FRAME() asm volatile("" ::: "memory")

static inline int target_gettid(void) { return (int)syscall(SYS_gettid); }

// The syscall number thread `tid` of this process is blocked in, from /proc/self/task/TID/syscall;
// -1 when it is running (the file then says "running") or gone.
static inline long target_blocked_syscall(int tid) {
  char path[64];
  char buf[256];
  snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
  FILE* f = fopen(path, "r");
  if (!f) {
    return -1;
  }
  long nr = -1;
  if (fgets(buf, sizeof buf, f) && strncmp(buf, "running", 7) != 0) {
    nr = strtol(buf, NULL, 10);
  }
  fclose(f);
  return nr;
}

static inline void target_wait_blocked_in(int tid, long nr) {
  while (target_blocked_syscall(tid) != nr) {
    sched_yield();
  }
}

// Line reader on a file descriptor with read(2) only (no stdio frames under the caller).
struct target_lines {
  int fd;
  size_t len;
  char buf[256];
};

// Returns the next line without its '\n' (valid until the next call), or NULL at end of file.
static inline const char* target_next_line(struct target_lines* in, char* out, size_t out_size) {
  for (;;) {
    char* nl = memchr(in->buf, '\n', in->len);
    if (nl) {
      size_t n = (size_t)(nl - in->buf);
      size_t copy = n < out_size - 1 ? n : out_size - 1;
      memcpy(out, in->buf, copy);
      out[copy] = '\0';
      memmove(in->buf, nl + 1, in->len - n - 1);
      in->len -= n + 1;
      return out;
    }
    if (in->len == sizeof in->buf) {
      in->len = 0;  // an over-long line is dropped
    }
    ssize_t r = read(in->fd, in->buf + in->len, sizeof in->buf - in->len);
    KEEP_FRAME();
    if (r <= 0) {
      return NULL;
    }
    in->len += (size_t)r;
  }
}

static inline void target_say(const char* line) {
  fputs(line, stdout);
  fputc('\n', stdout);
  fflush(stdout);
}

#endif
