// SPDX-License-Identifier: MIT
// probe_fd_swap VICTIM: a target that tries to make profctl write into a file it must not
// touch (issue 17, point 1). Started as root, it first becomes nobody (uid/gid 65534, as a
// daemon would; still dumpable), then opens VICTIM with O_PATH (which needs no permission
// on the file itself, only search permission on its directories) and starts a HELPER: a
// process sharing its fd table (clone(CLONE_FILES), not a thread, so profctl's stopped
// world does not stop it). The helper watches the fd numbers that were free at the start
// up to a few above the target's highest fd, where the memfd that profctl has the target
// create will land (the lowest free number), and dup2()s the O_PATH fd over every new fd it
// sees there (counting the swaps); after a millisecond it closes its copies again so that
// the next memfd lands there too.
// A profctl that reopened /proc/PID/fd/N, or trusted what it got, would truncate, grow and
// write VICTIM.
// Protocol: "ready pid=P helper=H lo=L hi=M" on stdout; commands on stdin, one line each:
//   swaps -> "swaps=N" (fds the helper replaced so far)
//   alloc -> 1000 x malloc(100)+free, then "done alloc" (the target still works)
//   quit / EOF -> kills the helper (by its pid), reaps it, exits 0
// "lo" and "hi" in the ready line: the watched fds are the ones in [lo, hi) free at start.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sampling_util.h"

enum { kRange = 6, kMaxFd = 64 };

struct shared {
  atomic_long swaps;
};

static int g_opath = -1;
static int g_lo = 0;
static int g_hi = 0;
static int g_own[kMaxFd];  // open at start: never touched
static pid_t g_parent = 0;
static struct stat g_victim;
static struct shared* g_shared;

// True while the target's main thread is in a ptrace stop ('t' in /proc/PID/stat).
static int target_stopped(void) {
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)g_parent);
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return 0;
  }
  const ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) {
    return 0;
  }
  buf[n] = '\0';
  const char* paren = strrchr(buf, ')');
  return paren != NULL && paren[1] == ' ' && paren[2] == 't';
}

static int helper_main(void* arg) {
  (void)arg;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != g_parent) {
    _exit(0);
  }
  long long placed[kMaxFd] = {0};
  unsigned long sweeps = 0;
  for (;;) {
    const long long now = sampling_clock_ns(CLOCK_MONOTONIC);
    for (int fd = g_lo; fd < g_hi; ++fd) {
      if (g_own[fd]) {
        continue;
      }
      struct stat st;
      if (fstat(fd, &st) != 0) {
        continue;  // free: where the next memfd lands
      }
      if (st.st_dev == g_victim.st_dev && st.st_ino == g_victim.st_ino) {
        if (now - placed[fd] > 1000000) {
          close(fd);  // free the slot again for the next attach's memfd
        }
        continue;
      }
      if (dup2(g_opath, fd) == fd) {  // something new: the memfd profctl asked for
        placed[fd] = now;
        atomic_fetch_add(&g_shared->swaps, 1);
      }
    }
    // Flat out while profctl has the target stopped (its install runs then), gently
    // otherwise.
    if (++sweeps % 256 == 0 && !target_stopped()) {
      usleep(200);
    }
  }
  return 0;
}

static void become_nobody(void) {
  if (geteuid() != 0) {
    return;
  }
  if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
      setresuid(65534, 65534, 65534) != 0) {
    perror("becoming nobody");
    exit(2);
  }
  prctl(PR_SET_DUMPABLE, 1);  // as a program started as nobody is
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: probe_fd_swap VICTIM\n");
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);
  become_nobody();
  sampling_die_with_parent();  // after the uid change, which clears it
  g_opath = open(argv[1], O_PATH | O_CLOEXEC);
  if (g_opath < 0 || fstat(g_opath, &g_victim) != 0) {
    perror("open VICTIM O_PATH");
    return 2;
  }
  // The watched fds: every one free now, up to kRange above the highest open one.
  int highest = g_opath;
  for (int fd = 0; fd < kMaxFd - kRange; ++fd) {
    g_own[fd] = fcntl(fd, F_GETFD) >= 0;
    if (g_own[fd] && fd > highest) {
      highest = fd;
    }
  }
  g_lo = 0;
  while (g_own[g_lo]) {
    ++g_lo;
  }
  g_hi = highest + 1 + kRange;
  g_shared =
      mmap(NULL, sizeof *g_shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (g_shared == MAP_FAILED) {
    perror("mmap");
    return 2;
  }
  atomic_init(&g_shared->swaps, 0);
  g_parent = getpid();
  size_t stack_size = 256 * 1024;
  char* stack = mmap(NULL, stack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (stack == MAP_FAILED) {
    perror("mmap stack");
    return 2;
  }
  pid_t helper = clone(helper_main, stack + stack_size, CLONE_FILES | SIGCHLD, NULL);
  if (helper < 0) {
    perror("clone");
    return 2;
  }
  printf("ready pid=%d helper=%d lo=%d hi=%d\n", getpid(), helper, g_lo, g_hi);
  char line[256];
  while (fgets(line, sizeof line, stdin) != NULL) {
    if (strncmp(line, "swaps", 5) == 0) {
      printf("swaps=%ld\n", atomic_load(&g_shared->swaps));
    } else if (strncmp(line, "alloc", 5) == 0) {
      for (int i = 0; i < 1000; ++i) {
        void* volatile p = malloc(100);
        free(p);
      }
      printf("done alloc\n");
    } else if (strncmp(line, "quit", 4) == 0) {
      break;
    } else {
      printf("unknown command\n");
    }
  }
  kill(helper, SIGKILL);
  while (waitpid(helper, NULL, 0) < 0 && errno == EINTR) {
  }
  return 0;
}
