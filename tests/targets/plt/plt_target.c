// SPDX-License-Identifier: MIT
// plt_target MS: spins for MS milliseconds of CPU on its main thread, calling through PLT
// stubs into a stripped library (libpltlib.so) and into libc, then exits 0.
//
// Stacks (innermost first):
//   [lib_nop@plt | labs@plt | clock_gettime@plt]  plt_loop  main  [libc]  _start
//   lib_nop | labs                               plt_loop  main  ...
//   libpltlib.so+0x<lib_inner>  lib_spin          plt_loop  main  ...
#define _GNU_SOURCE
#include <stdlib.h>
#include <time.h>

#include "../target_util.h"

unsigned long lib_spin(unsigned long x);
int lib_nop(int x);

static volatile long sink;

static long long cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

NOINLINE void plt_loop(long ms) {
  const long long end = cpu_ns() + ms * 1000000LL;
  while (cpu_ns() < end) {
    for (int i = 0; i < 20000; ++i) {
      sink += lib_nop(i);     // lib_nop@plt, then lib_nop
      sink += labs(i - 500);  // labs@plt (-fno-builtin), then labs
    }
    sink += (long)lib_spin((unsigned long)sink);
    KEEP_FRAME();
  }
}

int main(int argc, char** argv) {
  plt_loop(argc > 1 ? strtol(argv[1], NULL, 10) : 1000);
  KEEP_FRAME();
  return 0;
}
