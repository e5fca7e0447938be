// SPDX-License-Identifier: MIT
// heap_fork [server]: a program whose work is split with a forked child, as servers fork
// workers. The child's work (child_work): 7 x 2222 bytes from child_alloc (kept), then two
// threads (child_contend) that each lock one mutex 300 times, holding it 200 us, after a
// trylock that counts the calls that found it taken (those wait in the kernel).
//   (no argument) -> parent_alloc (5 x 1111 bytes, kept), fork, the child does its work,
//                    prints "child=PID contended=C" and exits 0; the parent waits, prints
//                    "parent=PID done" and exits 0 (1 if the child failed)
//   server        -> parent_alloc, then "ready"; for each stdin line:
//                    "fork"  -> a child does its work, prints "child=PID contended=C" and
//                               waits (the parent prints nothing)
//                    "check" -> the waiting child checks that it is as it was before any
//                               tracer came: malloc's first 16 bytes as main read them at
//                               start, the same number of executable mappings, no mapping
//                               named profctl-probe; prints "clean=1" or "clean=0 WHY" and
//                               exits; the parent reaps it
//                    "quit" / EOF -> exit 0
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sampling_util.h"

static void* volatile kept[16];
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static long contended;  // under g_lock

NOINLINE static void parent_alloc(void) {
  for (int i = 0; i < 5; ++i) {
    kept[i] = malloc(1111);
  }
  KEEP_FRAME();
}

NOINLINE static void child_alloc(void) {
  for (int i = 0; i < 7; ++i) {
    kept[5 + i] = malloc(2222);
  }
  KEEP_FRAME();
}

NOINLINE static void* child_contend(void* arg) {
  (void)arg;
  const struct timespec hold = {0, 200 * 1000};
  for (int i = 0; i < 300; ++i) {
    if (pthread_mutex_trylock(&g_lock) != 0) {
      pthread_mutex_lock(&g_lock);
      contended++;
    }
    nanosleep(&hold, NULL);
    pthread_mutex_unlock(&g_lock);
    sched_yield();
  }
  KEEP_FRAME();
  return NULL;
}

static unsigned char malloc_bytes_at_start[16];
static int exec_maps_at_start;

// Executable mappings, and whether one of profctl's probe areas is mapped.
static int exec_mappings(int* probe_area) {
  FILE* f = fopen("/proc/self/maps", "r");
  if (f == NULL) {
    return -1;
  }
  char line[512];
  int n = 0;
  *probe_area = 0;
  while (fgets(line, sizeof line, f) != NULL) {
    char perms[8] = "";
    if (sscanf(line, "%*s %7s", perms) == 1 && strchr(perms, 'x') != NULL) {
      ++n;
    }
    if (strstr(line, "profctl-probe") != NULL) {
      *probe_area = 1;
    }
  }
  fclose(f);
  return n;
}

static void check_clean(void) {
  int probe_area = 0;
  const int n = exec_mappings(&probe_area);
  // Read through a volatile pointer: the compiler must not assume what malloc's code is.
  const volatile unsigned char* code = (const volatile unsigned char*)(void*)malloc;
  unsigned char now[16];
  for (int i = 0; i < 16; ++i) {
    now[i] = code[i];
  }
  if (memcmp(now, malloc_bytes_at_start, sizeof now) != 0) {
    printf("clean=0 malloc's first bytes changed\n");
  } else if (probe_area) {
    printf("clean=0 a profctl-probe mapping is left\n");
  } else if (n != exec_maps_at_start) {
    printf("clean=0 %d executable mappings, %d at start\n", n, exec_maps_at_start);
  } else {
    printf("clean=1\n");
  }
  fflush(stdout);
}

static int child_main(void) {
  child_alloc();
  pthread_t t[2];
  for (int i = 0; i < 2; ++i) {
    if (pthread_create(&t[i], NULL, child_contend, NULL) != 0) {
      return 1;
    }
  }
  for (int i = 0; i < 2; ++i) {
    pthread_join(t[i], NULL);
  }
  printf("child=%d contended=%ld\n", (int)getpid(), contended);
  fflush(stdout);
  return 0;
}

static int server(void) {
  puts("ready");
  fflush(stdout);
  char line[128];
  pid_t child = 0;
  int release[2] = {-1, -1};
  while (fgets(line, sizeof line, stdin) != NULL) {
    if (strncmp(line, "fork", 4) == 0 && child == 0) {
      if (pipe(release) != 0) {
        return 1;
      }
      child = fork();
      if (child < 0) {
        return 1;
      }
      if (child == 0) {
        close(release[1]);
        int rc = child_main();
        char c;
        while (read(release[0], &c, 1) < 0) {
        }
        check_clean();
        _exit(rc);
      }
      close(release[0]);
    } else if (strncmp(line, "check", 5) == 0 && child > 0) {
      (void)!write(release[1], "x", 1);
      close(release[1]);
      waitpid(child, NULL, 0);
      child = 0;
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    }
  }
  return 0;
}

int main(int argc, char** argv) {
  sampling_die_with_parent();
  memcpy(malloc_bytes_at_start, (const void*)malloc, sizeof malloc_bytes_at_start);
  int probe_area = 0;
  exec_maps_at_start = exec_mappings(&probe_area);
  parent_alloc();
  if (argc > 1 && strcmp(argv[1], "server") == 0) {
    return server();
  }
  fflush(stdout);
  pid_t child = fork();
  if (child < 0) {
    return 1;
  }
  if (child == 0) {
    _exit(child_main());
  }
  int status = 0;
  if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return 1;
  }
  printf("parent=%d done\n", (int)getpid());
  return 0;
}
