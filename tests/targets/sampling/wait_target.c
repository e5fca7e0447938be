// SPDX-License-Identifier: MIT
// wait_target: waits and lock contention the block/mutex tests know exactly, each in a
// function named for what it does. It measures its own truth (CLOCK_MONOTONIC around every
// wait) and reports it, so the test compares the profile with what really happened.
// Protocol: "ready pid=P" on stdout; commands on stdin, one line each:
//   cond K MS     -> wait_on_cond: K waits on a condition variable, each signalled by a
//                    helper thread MS ms later; "done cond waited_ns=T"
//   sem K MS      -> wait_on_sem: K sem_wait, each posted MS ms later; "done sem waited_ns=T"
//   join K MS     -> wait_on_join: K pthread_join of a thread that sleeps MS ms;
//                    "done join waited_ns=T"
//   mutex N R US  -> N threads (contend_mutex), each locking g_queue_mutex R times and
//                    holding it US microseconds (hold_the_lock); "done mutex waited_ns=T
//                    slow=S" where T sums every pthread_mutex_lock call's duration and S
//                    counts the calls that took longer than 20 us (surely contended)
//   trymutex N R US -> like mutex (contend_counted), but each lock first tries the mutex and
//                    counts the tries that found it taken: those calls take glibc's
//                    contended path (__lll_lock_wait) unless the holder let go in the
//                    instant between; "done trymutex contended=C"
//   rwlock N R US -> N threads (contend_rwlock) each taking g_table_lock for writing R times,
//                    holding it US microseconds; "done rwlock"
//   heapmutex N R US -> like mutex, on a mutex make_shared_lock allocated with malloc
//                    (contend_heap_mutex); "done heapmutex"
//   barrier K MS  -> wait_on_barrier: K waits at a 2-thread barrier whose other thread
//                    arrives MS ms later; "done barrier waited_ns=T"
//   lonely N      -> lonely_lock: N lock/unlock pairs of a mutex no other thread touches;
//                    "done lonely ns=T"
//   hang          -> block_forever: a thread waits on a condition variable nobody signals;
//                    "done hang" (the thread stays blocked: the stack tests look at it)
//   wake          -> wakes block_forever once (it loops and waits again): "done wake n=W", W
//                    the times it has returned from its wait
//   quit / EOF    -> exit 0
#define _GNU_SOURCE
#include <pthread.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sampling_util.h"

static long long now_ns(void) { return sampling_clock_ns(CLOCK_MONOTONIC); }

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

// ---- condition variable ---------------------------------------------------------------
static pthread_mutex_t cond_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond_cv = PTHREAD_COND_INITIALIZER;
static int cond_flag;
static int helper_ms;

static void* cond_signaller(void* arg) {
  (void)arg;
  sleep_ms(helper_ms);
  pthread_mutex_lock(&cond_mu);
  cond_flag = 1;
  pthread_cond_signal(&cond_cv);
  pthread_mutex_unlock(&cond_mu);
  return NULL;
}

NOINLINE static long long wait_on_cond(int k) {
  long long waited = 0;
  for (int i = 0; i < k; ++i) {
    pthread_t t;
    cond_flag = 0;
    pthread_create(&t, NULL, cond_signaller, NULL);
    long long t0 = now_ns();
    pthread_mutex_lock(&cond_mu);
    while (!cond_flag)
      pthread_cond_wait(&cond_cv, &cond_mu);
    pthread_mutex_unlock(&cond_mu);
    waited += now_ns() - t0;
    pthread_join(t, NULL);
  }
  KEEP_FRAME();
  return waited;
}

// ---- semaphore ---------------------------------------------------------------------------
static sem_t sem;

static void* sem_poster(void* arg) {
  (void)arg;
  sleep_ms(helper_ms);
  sem_post(&sem);
  return NULL;
}

NOINLINE static long long wait_on_sem(int k) {
  long long waited = 0;
  for (int i = 0; i < k; ++i) {
    pthread_t t;
    pthread_create(&t, NULL, sem_poster, NULL);
    long long t0 = now_ns();
    while (sem_wait(&sem) != 0) {
    }
    waited += now_ns() - t0;
    pthread_join(t, NULL);
  }
  KEEP_FRAME();
  return waited;
}

// ---- join --------------------------------------------------------------------------------
static void* sleeper(void* arg) {
  (void)arg;
  sleep_ms(helper_ms);
  return NULL;
}

NOINLINE static long long wait_on_join(int k) {
  long long waited = 0;
  for (int i = 0; i < k; ++i) {
    pthread_t t;
    pthread_create(&t, NULL, sleeper, NULL);
    long long t0 = now_ns();
    pthread_join(t, NULL);
    waited += now_ns() - t0;
  }
  KEEP_FRAME();
  return waited;
}

// ---- mutex contention ----------------------------------------------------------------------
pthread_mutex_t g_queue_mutex = PTHREAD_MUTEX_INITIALIZER;
static int mutex_rounds;
static int hold_us;
static long long mutex_waited;  // under g_queue_mutex
static long long mutex_slow;
static volatile unsigned long long sink;

// Sleeps while holding the lock: the others run meanwhile and find it taken, however
// loaded the machine is (a spinning holder on a busy machine may run alone).
NOINLINE static void hold_the_lock(void) {
  struct timespec ts = {0, hold_us * 1000L};
  nanosleep(&ts, NULL);
  sink++;
  KEEP_FRAME();
}

NOINLINE static void* contend_mutex(void* arg) {
  (void)arg;
  for (int i = 0; i < mutex_rounds; ++i) {
    long long t0 = now_ns();
    pthread_mutex_lock(&g_queue_mutex);
    long long d = now_ns() - t0;
    mutex_waited += d;
    mutex_slow += d > 20000;
    hold_the_lock();
    pthread_mutex_unlock(&g_queue_mutex);
    // Let the others in: a waiter woken by the unlock must get a chance to take the lock.
    sched_yield();
  }
  KEEP_FRAME();
  return NULL;
}

static long long mutex_contended;  // under g_queue_mutex

NOINLINE static void* contend_counted(void* arg) {
  (void)arg;
  for (int i = 0; i < mutex_rounds; ++i) {
    if (pthread_mutex_trylock(&g_queue_mutex) != 0) {
      pthread_mutex_lock(&g_queue_mutex);
      mutex_contended++;
    }
    hold_the_lock();
    pthread_mutex_unlock(&g_queue_mutex);
    sched_yield();
  }
  KEEP_FRAME();
  return NULL;
}

// ---- a lock in a heap object ------------------------------------------------------------------
static pthread_mutex_t* heap_lock;

NOINLINE static pthread_mutex_t* make_shared_lock(void) {
  pthread_mutex_t* m = malloc(sizeof *m);
  pthread_mutex_init(m, NULL);
  KEEP_FRAME();
  return m;
}

NOINLINE static void* contend_heap_mutex(void* arg) {
  (void)arg;
  for (int i = 0; i < mutex_rounds; ++i) {
    pthread_mutex_lock(heap_lock);
    hold_the_lock();
    pthread_mutex_unlock(heap_lock);
    sched_yield();
  }
  KEEP_FRAME();
  return NULL;
}

// ---- rwlock contention (writers) -------------------------------------------------------------
pthread_rwlock_t g_table_lock = PTHREAD_RWLOCK_INITIALIZER;

NOINLINE static void* contend_rwlock(void* arg) {
  (void)arg;
  for (int i = 0; i < mutex_rounds; ++i) {
    pthread_rwlock_wrlock(&g_table_lock);
    hold_the_lock();
    pthread_rwlock_unlock(&g_table_lock);
    sched_yield();
  }
  KEEP_FRAME();
  return NULL;
}

// ---- barrier -------------------------------------------------------------------------------
static pthread_barrier_t barrier;

static void* barrier_helper(void* arg) {
  (void)arg;
  sleep_ms(helper_ms);
  pthread_barrier_wait(&barrier);
  return NULL;
}

NOINLINE static long long wait_on_barrier(int k) {
  long long waited = 0;
  for (int i = 0; i < k; ++i) {
    pthread_t t;
    pthread_create(&t, NULL, barrier_helper, NULL);
    long long t0 = now_ns();
    pthread_barrier_wait(&barrier);
    waited += now_ns() - t0;
    pthread_join(t, NULL);
  }
  KEEP_FRAME();
  return waited;
}

// ---- uncontended ---------------------------------------------------------------------------
NOINLINE static long long lonely_lock(long n) {
  static pthread_mutex_t mine = PTHREAD_MUTEX_INITIALIZER;
  long long t0 = now_ns();
  for (long i = 0; i < n; ++i) {
    pthread_mutex_lock(&mine);
    sink++;
    pthread_mutex_unlock(&mine);
  }
  KEEP_FRAME();
  return now_ns() - t0;
}

// ---- a wait that never ends ----------------------------------------------------------------
static pthread_mutex_t never_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never_cv = PTHREAD_COND_INITIALIZER;

static int never_wakeups;  // under never_mu

NOINLINE static void* block_forever(void* arg) {
  (void)arg;
  pthread_mutex_lock(&never_mu);
  for (;;) {
    pthread_cond_wait(&never_cv, &never_mu);
    ++never_wakeups;
  }
  KEEP_FRAME();
  return NULL;
}

int main(void) {
  sampling_die_with_parent();
  sem_init(&sem, 0, 0);
  pthread_barrier_init(&barrier, NULL, 2);
  char line[256];
  snprintf(line, sizeof line, "ready pid=%d", (int)getpid());
  target_say(line);
  struct target_lines in = {0};
  while (target_next_line(&in, line, sizeof line) != NULL) {
    char out[160];
    int k = 0;
    int ms = 0;
    int n = 0;
    if (sscanf(line, "cond %d %d", &k, &ms) == 2) {
      helper_ms = ms;
      snprintf(out, sizeof out, "done cond waited_ns=%lld", wait_on_cond(k));
    } else if (sscanf(line, "sem %d %d", &k, &ms) == 2) {
      helper_ms = ms;
      snprintf(out, sizeof out, "done sem waited_ns=%lld", wait_on_sem(k));
    } else if (sscanf(line, "join %d %d", &k, &ms) == 2) {
      helper_ms = ms;
      snprintf(out, sizeof out, "done join waited_ns=%lld", wait_on_join(k));
    } else if (sscanf(line, "mutex %d %d %d", &n, &k, &ms) == 3) {
      mutex_rounds = k;
      hold_us = ms;
      mutex_waited = 0;
      mutex_slow = 0;
      pthread_t t[64];
      for (int i = 0; i < n && i < 64; ++i)
        pthread_create(&t[i], NULL, contend_mutex, NULL);
      for (int i = 0; i < n && i < 64; ++i)
        pthread_join(t[i], NULL);
      snprintf(out, sizeof out, "done mutex waited_ns=%lld slow=%lld", mutex_waited, mutex_slow);
    } else if (sscanf(line, "trymutex %d %d %d", &n, &k, &ms) == 3) {
      mutex_rounds = k;
      hold_us = ms;
      mutex_contended = 0;
      pthread_t t[64];
      for (int i = 0; i < n && i < 64; ++i)
        pthread_create(&t[i], NULL, contend_counted, NULL);
      for (int i = 0; i < n && i < 64; ++i)
        pthread_join(t[i], NULL);
      snprintf(out, sizeof out, "done trymutex contended=%lld", mutex_contended);
    } else if (sscanf(line, "rwlock %d %d %d", &n, &k, &ms) == 3) {
      mutex_rounds = k;
      hold_us = ms;
      pthread_t t[64];
      for (int i = 0; i < n && i < 64; ++i)
        pthread_create(&t[i], NULL, contend_rwlock, NULL);
      for (int i = 0; i < n && i < 64; ++i)
        pthread_join(t[i], NULL);
      snprintf(out, sizeof out, "done rwlock");
    } else if (sscanf(line, "heapmutex %d %d %d", &n, &k, &ms) == 3) {
      mutex_rounds = k;
      hold_us = ms;
      if (!heap_lock)
        heap_lock = make_shared_lock();
      pthread_t t[64];
      for (int i = 0; i < n && i < 64; ++i)
        pthread_create(&t[i], NULL, contend_heap_mutex, NULL);
      for (int i = 0; i < n && i < 64; ++i)
        pthread_join(t[i], NULL);
      snprintf(out, sizeof out, "done heapmutex");
    } else if (sscanf(line, "barrier %d %d", &k, &ms) == 2) {
      helper_ms = ms;
      snprintf(out, sizeof out, "done barrier waited_ns=%lld", wait_on_barrier(k));
    } else if (sscanf(line, "lonely %d", &n) == 1) {
      snprintf(out, sizeof out, "done lonely ns=%lld", lonely_lock(n));
    } else if (strcmp(line, "hang") == 0) {
      pthread_t t;
      pthread_create(&t, NULL, block_forever, NULL);
      sleep_ms(50);
      snprintf(out, sizeof out, "done hang");
    } else if (strcmp(line, "wake") == 0) {
      pthread_mutex_lock(&never_mu);
      pthread_cond_broadcast(&never_cv);
      pthread_mutex_unlock(&never_mu);
      sleep_ms(100);
      pthread_mutex_lock(&never_mu);
      snprintf(out, sizeof out, "done wake n=%d", never_wakeups);
      pthread_mutex_unlock(&never_mu);
    } else if (strcmp(line, "quit") == 0) {
      break;
    } else {
      snprintf(out, sizeof out, "unknown command");
    }
    target_say(out);
  }
  return 0;
}
