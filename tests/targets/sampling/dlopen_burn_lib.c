// SPDX-License-Identifier: MIT
// The library dlopen_burn loads at run time: one function that burns CPU.
#include <stdint.h>
#include <time.h>

static uint64_t thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

// Spins for `ns` of the calling thread's CPU; the loop is the library's own code.
__attribute__((noinline)) uint64_t dlburn_spin(uint64_t ns) {
  const uint64_t end = thread_cpu_ns() + ns;
  uint64_t x = 0x9E3779B97F4A7C15ull;
  while (thread_cpu_ns() < end) {
    for (int i = 0; i < 1000; ++i) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
    }
  }
  return x;
}
