// SPDX-License-Identifier: MIT
// seccomp_target VARIANT: a process under a seccomp filter, installed (PR_SET_NO_NEW_PRIVS,
// then seccomp(SECCOMP_SET_MODE_FILTER)) before any other thread exists, so every thread
// has it. Every filter first kills a syscall of another architecture, then:
//   memfd  -> SECCOMP_RET_KILL_PROCESS for memfd_create
//   exec   -> SECCOMP_RET_KILL_PROCESS for mmap or mprotect with PROT_EXEC in args[2]
//   errno  -> SECCOMP_RET_ERRNO(EPERM) for memfd_create
//   allow  -> SECCOMP_RET_ALLOW for everything (two such filters stacked)
// Any other syscall is allowed. The program itself never makes a call its filter refuses.
// After the filter, a worker thread runs work_round (16 x malloc(100), each filled with its
// index and checked, then freed; then 1 ms of sleep, to leave the CPU to others) until told
// to stop. Protocol: "ready pid=P" on stdout; commands on stdin, one line each:
//   ping       -> "pong rounds=R errors=E" (rounds done, rounds whose check failed)
//   quit / EOF -> stops the worker; exits 0, or 2 when a check ever failed
// Exits 1 when the filter cannot be installed (the test then fails on "ready").
#define _GNU_SOURCE
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>

#include "sampling_util.h"

#define LOAD(field) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, field))
#define LOAD_ARG_LOW(i) BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[i]))
#define RET(v) BPF_STMT(BPF_RET | BPF_K, (v))
// Instructions 0-2 of every filter: another architecture's syscall kills.
#define ARCH_CHECK()                                                        \
  LOAD(arch), BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0), \
      RET(SECCOMP_RET_KILL_PROCESS)

static struct sock_filter memfd_kill[] = {
    ARCH_CHECK(),
    LOAD(nr),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_memfd_create, 0, 1),
    RET(SECCOMP_RET_KILL_PROCESS),
    RET(SECCOMP_RET_ALLOW),
};

static struct sock_filter exec_kill[] = {
    ARCH_CHECK(),
    LOAD(nr),                                                 // 3
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mmap, 1, 0),      // 4: -> 6
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_mprotect, 0, 3),  // 5: -> 6, else 9
    LOAD_ARG_LOW(2),                                          // 6: prot (little-endian low word)
    BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, PROT_EXEC, 0, 1),    // 7: -> 8, else 9
    RET(SECCOMP_RET_KILL_PROCESS),                            // 8
    RET(SECCOMP_RET_ALLOW),                                   // 9
};

static struct sock_filter memfd_errno[] = {
    ARCH_CHECK(),
    LOAD(nr),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_memfd_create, 0, 1),
    RET(SECCOMP_RET_ERRNO | EPERM),
    RET(SECCOMP_RET_ALLOW),
};

static struct sock_filter allow_all[] = {
    ARCH_CHECK(),
    RET(SECCOMP_RET_ALLOW),
};

static int install(struct sock_filter* filter, size_t len) {
  struct sock_fprog prog = {.len = (unsigned short)len, .filter = filter};
  return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

#define INSTALL(f) install((f), sizeof(f) / sizeof((f)[0]))

static atomic_long rounds;
static atomic_long errors;
static atomic_int stop;

NOINLINE void work_round(void) {
  unsigned char* p[16];
  for (int i = 0; i < 16; ++i) {
    p[i] = malloc(100);
    if (p[i]) {
      memset(p[i], i, 100);
    }
  }
  int bad = 0;
  for (int i = 0; i < 16; ++i) {
    if (!p[i]) {
      bad = 1;
      continue;
    }
    for (int j = 0; j < 100; ++j) {
      bad |= p[i][j] != (unsigned char)i;
    }
    free(p[i]);
  }
  if (bad) {
    atomic_fetch_add(&errors, 1);
  }
  atomic_fetch_add(&rounds, 1);
  KEEP_FRAME();
}

static void* worker_main(void* arg) {
  (void)arg;
  const struct timespec ms = {0, 1000000};
  while (!atomic_load(&stop)) {
    work_round();
    nanosleep(&ms, NULL);
  }
  return NULL;
}

int main(int argc, char** argv) {
  sampling_die_with_parent();
  const char* variant = argc > 1 ? argv[1] : "";
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
    perror("PR_SET_NO_NEW_PRIVS");
    return 1;
  }
  int r = -1;
  if (strcmp(variant, "memfd") == 0) {
    r = INSTALL(memfd_kill);
  } else if (strcmp(variant, "exec") == 0) {
    r = INSTALL(exec_kill);
  } else if (strcmp(variant, "errno") == 0) {
    r = INSTALL(memfd_errno);
  } else if (strcmp(variant, "allow") == 0) {
    r = INSTALL(allow_all);
    if (r == 0) {
      r = INSTALL(allow_all);
    }
  } else {
    fprintf(stderr, "usage: seccomp_target memfd|exec|errno|allow\n");
    return 1;
  }
  if (r != 0) {
    perror("seccomp(SECCOMP_SET_MODE_FILTER)");
    return 1;
  }
  pthread_t worker;
  if (pthread_create(&worker, NULL, worker_main, NULL) != 0) {
    return 1;
  }
  char line[256];
  snprintf(line, sizeof line, "ready pid=%d", (int)getpid());
  target_say(line);
  struct target_lines in = {0};
  while (target_next_line(&in, line, sizeof line) != NULL) {
    if (strcmp(line, "ping") == 0) {
      char out[128];
      snprintf(out, sizeof out, "pong rounds=%ld errors=%ld", atomic_load(&rounds),
               atomic_load(&errors));
      target_say(out);
    } else if (strcmp(line, "quit") == 0) {
      break;
    }
  }
  atomic_store(&stop, 1);
  pthread_join(worker, NULL);
  return atomic_load(&errors) == 0 ? 0 : 2;
}
