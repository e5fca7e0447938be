// SPDX-License-Identifier: MIT
// safety_target MODE: a process that checks itself while profctl attaches to it, installs
// its probes, removes them, or is killed in the middle of any of that.
//
// What it checks, all the time:
//  - signals: a sender process (forked at start, before any profctl) sigqueue()s SIGRTMIN
//    to it with the values 0, 1, 2, ... (~3,000 a second); the main thread takes every one
//    (the others block it) and counts gaps, repeats and siginfo that is not the sender's
//    SI_QUEUE. None may be lost, duplicated or reordered.
//  - registers: a loop holds known values in rbx, r12-r15, xmm8-xmm12, the upper halves of
//    ymm13-ymm15 (with AVX2) and MXCSR (round toward zero), and checks them continuously.
//  - the heap: two threads allocate, fill with a pattern, check and free blocks.
//  - waits and locks: a producer/consumer on a condition variable, a semaphore ping-pong
//    and two threads incrementing a counter under a mutex; the totals must be exact.
//  - syscalls: in MODE "block" the main thread sits in read(2) on stdin with an SA_RESTART
//    handler taking the signals: a read that fails (EINTR included) is an error. In MODE
//    "spin" the main thread runs the register loop itself (so a remote syscall runs on a
//    thread interrupted in user code) and polls stdin. MODE "aslimit" is "block" with
//    RLIMIT_AS set 48 MiB above what it has mapped once its threads run, so that profctl's
//    install fails half-way (its 97 MiB shared area cannot be mapped) and must undo itself.
//
// Protocol: "ready pid=P sender=S" on stdout; commands on stdin:
//   status -> "status received=R gaps=G badinfo=B regs=X heap=H sys=Y"
//   finish -> stops the sender and the workers, checks every total, prints
//             "finish sent=S received=R gaps=G badinfo=B regs=X heap=H sys=Y waits=W" and
//             exits 0 when everything held, 1 otherwise.
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sampling_util.h"

static pid_t g_sender;
static int g_sender_pipe[2];
static atomic_long g_received, g_gaps, g_badinfo, g_regs, g_heap, g_sys;
static long g_expected;  // main thread only (the handler)
static atomic_int g_stop;
static atomic_int g_allocating; /* allocator threads past their first malloc (their arena) */
static int g_have_avx2;

// ---- signals ---------------------------------------------------------------------------
static void on_rt(int sig, siginfo_t* si, void* uc) {
  (void)sig;
  (void)uc;
  if (si->si_code != SI_QUEUE || si->si_pid != g_sender) {
    atomic_fetch_add(&g_badinfo, 1);
  }
  long v = si->si_value.sival_int;
  if (v != g_expected) {
    atomic_fetch_add(&g_gaps, 1);
  }
  g_expected = v + 1;
  atomic_fetch_add(&g_received, 1);
}

static volatile sig_atomic_t sender_stop;
static void on_sender_stop(int sig) {
  (void)sig;
  sender_stop = 1;
}

static void run_sender(pid_t target) {
  sampling_die_with_parent();
  signal(SIGUSR1, on_sender_stop);
  long seq = 0;
  const struct timespec gap = {0, 250000};
  while (!sender_stop) {
    union sigval v = {.sival_int = (int)seq};
    if (sigqueue(target, SIGRTMIN, v) == 0) {
      ++seq;
    } else if (errno != EAGAIN) {
      break;
    }
    nanosleep(&gap, NULL);
  }
  if (write(g_sender_pipe[1], &seq, sizeof seq) != sizeof seq) {
    _exit(2);
  }
  _exit(0);
}

// ---- registers -------------------------------------------------------------------------
// Returns the mismatches seen in `iters` rounds of checking the values it loaded.
__attribute__((noinline)) static long spin_check(long iters) {
  long bad = 0;
  unsigned int mxcsr_rz = 0x7f80;  // all exceptions masked, round toward zero
  unsigned int mxcsr_saved = 0;
  __asm__ volatile("stmxcsr %0" : "=m"(mxcsr_saved));
  __asm__ volatile("ldmxcsr %0" : : "m"(mxcsr_rz));
  __asm__ volatile(
      "movabs $0x1111111111111111, %%rbx\n"
      "movabs $0x2222222222222222, %%r12\n"
      "movabs $0x3333333333333333, %%r13\n"
      "movabs $0x4444444444444444, %%r14\n"
      "movabs $0x5555555555555555, %%r15\n"
      "movq %%rbx, %%xmm8\n"
      "movq %%r12, %%xmm9\n"
      "movq %%r13, %%xmm10\n"
      "movq %%r14, %%xmm11\n"
      "movq %%r15, %%xmm12\n"
      "xor %%eax, %%eax\n"
      "1:\n"
      "movabs $0x1111111111111111, %%rdx\n cmp %%rdx, %%rbx\n jne 2f\n"
      "movabs $0x2222222222222222, %%rdx\n cmp %%rdx, %%r12\n jne 2f\n"
      "movabs $0x3333333333333333, %%rdx\n cmp %%rdx, %%r13\n jne 2f\n"
      "movabs $0x4444444444444444, %%rdx\n cmp %%rdx, %%r14\n jne 2f\n"
      "movabs $0x5555555555555555, %%rdx\n cmp %%rdx, %%r15\n jne 2f\n"
      "movq %%xmm8, %%rdx\n cmp %%rdx, %%rbx\n jne 2f\n"
      "movq %%xmm9, %%rdx\n cmp %%rdx, %%r12\n jne 2f\n"
      "movq %%xmm10, %%rdx\n cmp %%rdx, %%r13\n jne 2f\n"
      "movq %%xmm11, %%rdx\n cmp %%rdx, %%r14\n jne 2f\n"
      "movq %%xmm12, %%rdx\n cmp %%rdx, %%r15\n jne 2f\n"
      "jmp 3f\n"
      "2: inc %%rax\n"
      "3: dec %%rcx\n jnz 1b\n"
      : "=&a"(bad), "+c"(iters)
      :
      : "rbx", "rdx", "r12", "r13", "r14", "r15", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "cc");
  unsigned int mxcsr_now = 0;
  __asm__ volatile("stmxcsr %0" : "=m"(mxcsr_now));
  if (mxcsr_now != mxcsr_rz) {
    ++bad;
  }
  __asm__ volatile("ldmxcsr %0" : : "m"(mxcsr_saved));
  return bad;
}

// The upper halves of three ymm registers (AVX2 only).
__attribute__((noinline)) static long spin_check_ymm(long iters) {
  long bad = 0;
  __asm__ volatile(
      "movabs $0x6666666666666666, %%rdx\n"
      "vmovq %%rdx, %%xmm13\n vpbroadcastq %%xmm13, %%ymm13\n"
      "movabs $0x7777777777777777, %%rdx\n"
      "vmovq %%rdx, %%xmm14\n vpbroadcastq %%xmm14, %%ymm14\n"
      "movabs $0x0123456789abcdef, %%rdx\n"
      "vmovq %%rdx, %%xmm15\n vpbroadcastq %%xmm15, %%ymm15\n"
      "xor %%eax, %%eax\n"
      "1:\n"
      "vextracti128 $1, %%ymm13, %%xmm7\n vmovq %%xmm7, %%rdx\n"
      "movabs $0x6666666666666666, %%rsi\n cmp %%rsi, %%rdx\n jne 2f\n"
      "vextracti128 $1, %%ymm14, %%xmm7\n vmovq %%xmm7, %%rdx\n"
      "movabs $0x7777777777777777, %%rsi\n cmp %%rsi, %%rdx\n jne 2f\n"
      "vextracti128 $1, %%ymm15, %%xmm7\n vmovq %%xmm7, %%rdx\n"
      "movabs $0x0123456789abcdef, %%rsi\n cmp %%rsi, %%rdx\n jne 2f\n"
      "jmp 3f\n"
      "2: inc %%rax\n"
      "3: dec %%rcx\n jnz 1b\n"
      "vzeroupper\n"
      : "=&a"(bad), "+c"(iters)
      :
      : "rdx", "rsi", "xmm7", "xmm13", "xmm14", "xmm15", "cc");
  return bad;
}

static void check_registers(void) {
  atomic_fetch_add(&g_regs, spin_check(200000));
  if (g_have_avx2) {
    atomic_fetch_add(&g_regs, spin_check_ymm(100000));
  }
}

static void* spinner(void* arg) {
  (void)arg;
  while (!atomic_load(&g_stop)) {
    check_registers();
    usleep(200);
  }
  return NULL;
}

// ---- heap ------------------------------------------------------------------------------
static unsigned char pattern(const void* p, size_t n) {
  return (unsigned char)(((uintptr_t)p >> 4) ^ n);
}

// The process's size in pages (statm's first field), or -1.
static long statm_pages(void) {
  long pages = -1;
  FILE* f = fopen("/proc/self/statm", "r");
  if (f != NULL) {
    if (fscanf(f, "%ld", &pages) != 1) {
      pages = -1;
    }
    fclose(f);
  }
  return pages;
}

// RLIMIT_AS 48 MiB above `pages`: room for profctl's code areas, not for its shared area.
static int set_as_limit(long pages) {
  struct rlimit lim = {(rlim_t)pages * 4096 + (48u << 20), (rlim_t)pages * 4096 + (48u << 20)};
  return setrlimit(RLIMIT_AS, &lim);
}

static void* allocator(void* arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  enum { kSlots = 128 };
  unsigned char* slot[kSlots] = {0};
  size_t len[kSlots] = {0};
  for (long i = 0; !atomic_load(&g_stop); ++i) {
    int k = (int)(rand_r(&seed) % kSlots);
    if (slot[k] != NULL) {
      unsigned char want = pattern(slot[k], len[k]);
      for (size_t j = 0; j < len[k]; ++j) {
        if (slot[k][j] != want) {
          atomic_fetch_add(&g_heap, 1);
          break;
        }
      }
      free(slot[k]);
    }
    len[k] = 16 + rand_r(&seed) % 4096;
    slot[k] = (i % 7 == 0) ? calloc(1, len[k]) : malloc(len[k]);
    if (slot[k] == NULL) {
      atomic_fetch_add(&g_heap, 1);
      continue;
    }
    memset(slot[k], pattern(slot[k], len[k]), len[k]);
    if (i == 0) {
      atomic_fetch_add(&g_allocating, 1);
    }
    if (i % 256 == 0) {
      usleep(500);
    }
  }
  for (int k = 0; k < kSlots; ++k) {
    free(slot[k]);
  }
  return NULL;
}

// ---- waits and locks -------------------------------------------------------------------
static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER;
static long q_items, q_produced, q_consumed;
static int q_done;
static sem_t ping, pong;
static long pings, pongs;
static pthread_mutex_t c_mu = PTHREAD_MUTEX_INITIALIZER;
static long c_counter;
enum { kIncrements = 20000 };

static void* producer(void* arg) {
  (void)arg;
  while (!atomic_load(&g_stop)) {
    pthread_mutex_lock(&q_mu);
    ++q_items;
    ++q_produced;
    pthread_cond_signal(&q_cv);
    pthread_mutex_unlock(&q_mu);
    usleep(300);
  }
  pthread_mutex_lock(&q_mu);
  q_done = 1;
  pthread_cond_broadcast(&q_cv);
  pthread_mutex_unlock(&q_mu);
  return NULL;
}

static void* consumer(void* arg) {
  (void)arg;
  pthread_mutex_lock(&q_mu);
  for (;;) {
    while (q_items == 0 && !q_done) {
      pthread_cond_wait(&q_cv, &q_mu);
    }
    if (q_items == 0) {
      break;  // done, and everything produced was consumed
    }
    --q_items;
    ++q_consumed;
  }
  pthread_mutex_unlock(&q_mu);
  return NULL;
}

// The pinger alone decides when to end, and says so with its last ping: the ponger reads
// the flag only after taking that ping, so it never leaves a ping of a round unanswered.
static atomic_int ping_done;

static void* pinger(void* arg) {
  (void)arg;
  while (!atomic_load(&g_stop)) {
    sem_post(&ping);
    sem_wait(&pong);
    ++pongs;
  }
  atomic_store(&ping_done, 1);
  sem_post(&ping);  // the ponger's last wait
  return NULL;
}

static void* ponger(void* arg) {
  (void)arg;
  for (;;) {
    sem_wait(&ping);
    if (atomic_load(&ping_done)) {
      break;
    }
    ++pings;
    sem_post(&pong);
  }
  return NULL;
}

static void* incrementer(void* arg) {
  (void)arg;
  for (int i = 0; i < kIncrements; ++i) {
    pthread_mutex_lock(&c_mu);
    long v = c_counter;
    for (volatile int spin = 0; spin < 50; ++spin) {
    }
    c_counter = v + 1;
    pthread_mutex_unlock(&c_mu);
    if (i % 64 == 0) {
      usleep(100);
    }
  }
  return NULL;
}

// ---- main ------------------------------------------------------------------------------
static void print_status(const char* what) {
  printf("%s received=%ld gaps=%ld badinfo=%ld regs=%ld heap=%ld sys=%ld\n", what,
         atomic_load(&g_received), atomic_load(&g_gaps), atomic_load(&g_badinfo),
         atomic_load(&g_regs), atomic_load(&g_heap), atomic_load(&g_sys));
  fflush(stdout);
}

// Reads one command line; in spin mode stdin is non-blocking and the loop checks the
// registers between polls. Returns 0 at EOF.
static int read_command(int spin, char* line, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap) {
    char c;
    ssize_t r = read(0, &c, 1);
    if (r == 1) {
      if (c == '\n') {
        break;
      }
      line[n++] = c;
      continue;
    }
    if (r == 0) {
      return 0;
    }
    if (spin && errno == EAGAIN) {
      check_registers();
      usleep(1000);  // mostly in user code, but not a whole CPU: tests run side by side
      continue;
    }
    atomic_fetch_add(&g_sys, 1);  // a read that failed: EINTR under SA_RESTART included
    if (errno != EINTR) {
      return 0;
    }
  }
  line[n] = 0;
  return 1;
}

int main(int argc, char** argv) {
  const int spin = argc > 1 && strcmp(argv[1], "spin") == 0;
  sampling_die_with_parent();
  unsigned a = 0, b = 0, c = 0, d = 0;
  g_have_avx2 = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 5)) != 0;

  // Every thread but main blocks SIGRTMIN: main takes them all, in order.
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_rt;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGRTMIN, &sa, NULL);
  sigset_t rt;
  sigemptyset(&rt);
  sigaddset(&rt, SIGRTMIN);
  pthread_sigmask(SIG_BLOCK, &rt, NULL);

  if (pipe(g_sender_pipe) != 0) {
    return 2;
  }
  const pid_t self = getpid();
  g_sender = fork();
  if (g_sender == 0) {
    run_sender(self);
  }
  sem_init(&ping, 0, 0);
  sem_init(&pong, 0, 0);
  pthread_t th[9];
  int nth = 0;
  pthread_create(&th[nth++], NULL, allocator, (void*)1);
  pthread_create(&th[nth++], NULL, allocator, (void*)2);
  pthread_create(&th[nth++], NULL, producer, NULL);
  pthread_create(&th[nth++], NULL, consumer, NULL);
  pthread_create(&th[nth++], NULL, pinger, NULL);
  pthread_create(&th[nth++], NULL, ponger, NULL);
  pthread_t inc[2];
  pthread_create(&inc[0], NULL, incrementer, NULL);
  pthread_create(&inc[1], NULL, incrementer, NULL);
  if (!spin) {
    pthread_create(&th[nth++], NULL, spinner, NULL);
  } else {
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
  }
  pthread_sigmask(SIG_UNBLOCK, &rt, NULL);
  if (argc > 1 && strcmp(argv[1], "aslimit") == 0) {
    // The limit goes 48 MiB above the settled size, once every thread runs and both
    // allocators have their arena. A size read while glibc creates an arena is 64 MiB high
    // (it maps 128 MiB and unmaps the unaligned half), and a loaded machine can hold a
    // thread in between for a long time: the smallest of several reads is the settled size,
    // and for a second after the limit is set a smaller read lowers it again (a limit 64 MiB
    // too high let the 97 MiB area in, seen under a loaded suite).
    while (atomic_load(&g_allocating) < 2) {
      usleep(1000);
    }
    long pages = statm_pages();
    for (int i = 0; i < 10; ++i) {
      usleep(50000);
      long now = statm_pages();
      if (now > 0 && (pages <= 0 || now < pages)) {
        pages = now;
      }
    }
    if (pages <= 0 || set_as_limit(pages) != 0) {
      return 2;
    }
    for (int i = 0; i < 20; ++i) {
      usleep(50000);
      long now = statm_pages();
      if (now > 0 && now < pages) {
        pages = now;
        if (set_as_limit(pages) != 0) {
          return 2;
        }
      }
    }
  }
  printf("ready pid=%d sender=%d\n", (int)self, (int)g_sender);
  fflush(stdout);

  char line[128];
  while (read_command(spin, line, sizeof line)) {
    if (strcmp(line, "status") == 0) {
      print_status("status");
    } else if (strcmp(line, "finish") == 0) {
      break;
    }
  }
  kill(g_sender, SIGUSR1);
  long sent = -1;
  if (read(g_sender_pipe[0], &sent, sizeof sent) != sizeof sent) {
    sent = -1;
  }
  waitpid(g_sender, NULL, 0);
  // Every queued signal is delivered before the count is compared (bounded wait).
  const long long give_up = sampling_clock_ns(CLOCK_MONOTONIC) + 5000000000LL;
  while (atomic_load(&g_received) < sent && sampling_clock_ns(CLOCK_MONOTONIC) < give_up) {
    usleep(1000);
  }
  atomic_store(&g_stop, 1);
  for (int i = 0; i < nth; ++i) {
    pthread_join(th[i], NULL);
  }
  pthread_join(inc[0], NULL);
  pthread_join(inc[1], NULL);
  const int waits_ok = q_produced == q_consumed && pings == pongs && c_counter == 2L * kIncrements;
  printf("finish sent=%ld ", sent);
  print_status(waits_ok ? "waits=ok" : "waits=bad");
  const int ok = sent >= 0 && atomic_load(&g_received) == sent && atomic_load(&g_gaps) == 0 &&
                 atomic_load(&g_badinfo) == 0 && atomic_load(&g_regs) == 0 &&
                 atomic_load(&g_heap) == 0 && atomic_load(&g_sys) == 0 && waits_ok;
  return ok ? 0 : 1;
}
