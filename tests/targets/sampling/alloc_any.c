// SPDX-License-Identifier: MIT
// alloc_any: allocations the heap tests know exactly, through whichever allocator the dynamic
// linker binds `malloc` to (glibc, or jemalloc, tcmalloc, mimalloc when preloaded or linked),
// and through that allocator's own entry points when it has them (looked up with dlsym, so
// one binary serves every allocator).
// Protocol: "ready pid=P malloc=MODULE" on stdout (MODULE: the file that defines the malloc
// this process calls); commands on stdin, one line each:
//   run  -> the workload below once, then one line
//           "done F=A,B,C,D F=A,B,C,D ..." for every function F that ran: the allocations it
//           made (A), their bytes as requested (B), and of them the ones still live (C) and
//           their bytes (D): the heap profile's alloc_objects, alloc_space, inuse_objects,
//           inuse_space for the stacks through F (nothing is freed after the line).
//   nest N -> N x (posix_memalign(64, 1000) + free) in nest_posix_memalign, then
//           N x (valloc(1000) + free) in nest_valloc: allocators whose entry points call
//           each other (tcmalloc, mimalloc, glibc); "done nest"
//   quit / EOF -> exit 0
// Each F is a noinline function that makes only the allocations it reports.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sampling_util.h"

static inline void escape(void* p) { asm volatile("" : : "r"(p) : "memory"); }

struct tally {
  long long objects, bytes, live_objects, live_bytes;
};

static char report[8192];
static size_t report_len;

static void say(const char* name, struct tally t) {
  int n = snprintf(report + report_len, sizeof report - report_len, " %s=%lld,%lld,%lld,%lld", name,
                   t.objects, t.bytes, t.live_objects, t.live_bytes);
  if (n > 0 && (size_t)n < sizeof report - report_len) {
    report_len += (size_t)n;
  }
}

// A block that stays allocated: counted as made and as live.
static void kept(struct tally* t, void* p, long long size) {
  escape(p);
  if (p == NULL) {
    fprintf(stderr, "allocation of %lld bytes failed\n", size);
    exit(3);
  }
  t->objects++;
  t->bytes += size;
  t->live_objects++;
  t->live_bytes += size;
}
// A block freed again (or moved by a realloc) afterwards: made, not live.
static void gone(struct tally* t, void* p, long long size) {
  kept(t, p, size);
  t->live_objects--;
  t->live_bytes -= size;
}

// ---- the C functions every allocator defines ---------------------------------------------

NOINLINE void std_malloc(void) {
  struct tally t = {0};
  for (int i = 0; i < 100; ++i)
    kept(&t, malloc(100), 100);
  say("std_malloc", t);
  KEEP_FRAME();
}
NOINLINE void std_free(void) {
  struct tally t = {0};
  void* p[50];
  for (int i = 0; i < 50; ++i) {
    p[i] = malloc(4096);
    gone(&t, p[i], 4096);
  }
  for (int i = 0; i < 50; ++i)
    free(p[i]);
  say("std_free", t);
  KEEP_FRAME();
}
NOINLINE void std_calloc(void) {
  struct tally t = {0};
  for (int i = 0; i < 20; ++i)
    kept(&t, calloc(8, 32), 256);
  say("std_calloc", t);
  KEEP_FRAME();
}
NOINLINE void std_realloc(void) {
  struct tally t = {0};
  for (int i = 0; i < 10; ++i) {
    void* p = malloc(64);
    gone(&t, p, 64);
    kept(&t, realloc(p, 8192), 8192);
  }
  say("std_realloc", t);
  KEEP_FRAME();
}
NOINLINE void std_posix_memalign(void) {
  struct tally t = {0};
  for (int i = 0; i < 5; ++i) {
    void* p = NULL;
    if (posix_memalign(&p, 64, 1000) != 0)
      p = NULL;
    kept(&t, p, 1000);
  }
  say("std_posix_memalign", t);
  KEEP_FRAME();
}
NOINLINE void std_aligned_alloc(void) {
  struct tally t = {0};
  for (int i = 0; i < 4; ++i)
    kept(&t, aligned_alloc(64, 256), 256);
  say("std_aligned_alloc", t);
  KEEP_FRAME();
}
NOINLINE void std_memalign(void) {
  struct tally t = {0};
  for (int i = 0; i < 3; ++i)
    kept(&t, memalign(128, 512), 512);
  say("std_memalign", t);
  KEEP_FRAME();
}
NOINLINE void std_valloc(void) {
  struct tally t = {0};
  for (int i = 0; i < 2; ++i)
    kept(&t, valloc(4096), 4096);
  say("std_valloc", t);
  KEEP_FRAME();
}

// ---- an allocator's own entry points, when the process has them --------------------------

static void* sym(const char* name) { return dlsym(RTLD_DEFAULT, name); }

// Looked up once before "ready": dlsym of a missing name allocates (dlerror's message).
static struct {
  void* (*mallocx)(size_t, int);
  void* (*rallocx)(void*, size_t, int);
  void (*dallocx)(void*, int);
  void (*sdallocx)(void*, size_t, int);
  void* (*tc_malloc)(size_t);
  void* (*tc_calloc)(size_t, size_t);
  void* (*tc_realloc)(void*, size_t);
  void* (*tc_memalign)(size_t, size_t);
  void (*tc_free)(void*);
  void (*tc_free_sized)(void*, size_t);
  void* (*mi_malloc)(size_t);
  void* (*mi_zalloc)(size_t);
  void* (*mi_mallocn)(size_t, size_t);
  void* (*mi_malloc_aligned)(size_t, size_t);
  void* (*mi_realloc)(void*, size_t);
  void (*mi_free)(void*);
  void (*mi_free_size)(void*, size_t);
} api;

static void look_up_api(void) {
  api.mallocx = sym("mallocx");
  api.rallocx = sym("rallocx");
  api.dallocx = sym("dallocx");
  api.sdallocx = sym("sdallocx");
  api.tc_malloc = sym("tc_malloc");
  api.tc_calloc = sym("tc_calloc");
  api.tc_realloc = sym("tc_realloc");
  api.tc_memalign = sym("tc_memalign");
  api.tc_free = sym("tc_free");
  api.tc_free_sized = sym("tc_free_sized");
  api.mi_malloc = sym("mi_malloc");
  api.mi_zalloc = sym("mi_zalloc");
  api.mi_mallocn = sym("mi_mallocn");
  api.mi_malloc_aligned = sym("mi_malloc_aligned");
  api.mi_realloc = sym("mi_realloc");
  api.mi_free = sym("mi_free");
  api.mi_free_size = sym("mi_free_size");
}

// jemalloc's non-standard API.
NOINLINE void je_api(void) {
  if (!api.mallocx || !api.rallocx || !api.dallocx || !api.sdallocx)
    return;
  struct tally t = {0};
  for (int i = 0; i < 7; ++i)
    kept(&t, api.mallocx(300, 0), 300);
  for (int i = 0; i < 6; ++i) {
    void* p = api.mallocx(32, 0);
    gone(&t, p, 32);
    kept(&t, api.rallocx(p, 2048, 0), 2048);
  }
  for (int i = 0; i < 5; ++i) {
    void* p = api.mallocx(500, 0);
    gone(&t, p, 500);
    api.dallocx(p, 0);
  }
  for (int i = 0; i < 4; ++i) {
    void* p = api.mallocx(700, 0);
    gone(&t, p, 700);
    api.sdallocx(p, 700, 0);
  }
  say("je_api", t);
  KEEP_FRAME();
}

// gperftools' tcmalloc.
NOINLINE void tc_api(void) {
  if (!api.tc_malloc || !api.tc_calloc || !api.tc_realloc || !api.tc_memalign || !api.tc_free ||
      !api.tc_free_sized)
    return;
  struct tally t = {0};
  for (int i = 0; i < 6; ++i)
    kept(&t, api.tc_malloc(120), 120);
  for (int i = 0; i < 3; ++i)
    kept(&t, api.tc_calloc(4, 50), 200);
  for (int i = 0; i < 4; ++i) {
    void* p = api.tc_malloc(16);
    gone(&t, p, 16);
    kept(&t, api.tc_realloc(p, 1000), 1000);
  }
  for (int i = 0; i < 2; ++i)
    kept(&t, api.tc_memalign(64, 300), 300);
  for (int i = 0; i < 5; ++i) {
    void* p = api.tc_malloc(900);
    gone(&t, p, 900);
    api.tc_free(p);
  }
  for (int i = 0; i < 3; ++i) {
    void* p = api.tc_malloc(333);
    gone(&t, p, 333);
    api.tc_free_sized(p, 333);
  }
  say("tc_api", t);
  KEEP_FRAME();
}

// mimalloc.
NOINLINE void mi_api(void) {
  if (!api.mi_malloc || !api.mi_zalloc || !api.mi_mallocn || !api.mi_malloc_aligned ||
      !api.mi_realloc || !api.mi_free || !api.mi_free_size)
    return;
  struct tally t = {0};
  for (int i = 0; i < 6; ++i)
    kept(&t, api.mi_malloc(120), 120);
  for (int i = 0; i < 4; ++i)
    kept(&t, api.mi_zalloc(80), 80);
  for (int i = 0; i < 3; ++i)
    kept(&t, api.mi_mallocn(5, 40), 200);
  for (int i = 0; i < 2; ++i)
    kept(&t, api.mi_malloc_aligned(256, 64), 256);
  for (int i = 0; i < 4; ++i) {
    void* p = api.mi_malloc(10);
    gone(&t, p, 10);
    kept(&t, api.mi_realloc(p, 700), 700);
  }
  for (int i = 0; i < 5; ++i) {
    void* p = api.mi_malloc(900);
    gone(&t, p, 900);
    api.mi_free(p);
  }
  for (int i = 0; i < 3; ++i) {
    void* p = api.mi_malloc(333);
    gone(&t, p, 333);
    api.mi_free_size(p, 333);
  }
  say("mi_api", t);
  KEEP_FRAME();
}

NOINLINE void nest_posix_memalign(int n) {
  for (int i = 0; i < n; ++i) {
    void* p = NULL;
    if (posix_memalign(&p, 64, 1000) == 0) {
      escape(p);
      free(p);
    }
  }
  KEEP_FRAME();
}
NOINLINE void nest_valloc(int n) {
  for (int i = 0; i < n; ++i) {
    void* p = valloc(1000);
    escape(p);
    free(p);
  }
  KEEP_FRAME();
}

static void run_workload(void) {
  report_len = 0;
  report[0] = '\0';
  std_malloc();
  std_free();
  std_calloc();
  std_realloc();
  std_posix_memalign();
  std_aligned_alloc();
  std_memalign();
  std_valloc();
  je_api();
  tc_api();
  mi_api();
}

int main(void) {
  sampling_die_with_parent();
  setvbuf(stdout, NULL, _IOLBF, 0);
  Dl_info info;
  memset(&info, 0, sizeof info);
  look_up_api();
  void* m = sym("malloc");
  if (m == NULL || dladdr(m, &info) == 0 || info.dli_fname == NULL) {
    fprintf(stderr, "cannot tell which module defines malloc\n");
    return 2;
  }
  // Everything printf and the line reader need is allocated before the "ready" line.
  printf("ready pid=%d malloc=%s\n", (int)getpid(), info.dli_fname);
  char line[256];
  while (fgets(line, sizeof line, stdin) != NULL) {
    if (strncmp(line, "run", 3) == 0) {
      run_workload();
      printf("done%s\n", report);
    } else if (strncmp(line, "nest ", 5) == 0) {
      const int n = atoi(line + 5);
      nest_posix_memalign(n);
      nest_valloc(n);
      printf("done nest\n");
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    }
  }
  return 0;
}
