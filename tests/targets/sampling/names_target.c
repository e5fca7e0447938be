// SPDX-License-Identifier: MIT
// names_target keep|free: allocations and CPU in functions that a stripped copy
// (names_target_stripped: no .symtab, no DWARF) cannot name, for "no ?? in any output"
// (tests/integration/sampling/names_test.cpp). Then it exits.
//   alloc_kept:  64 x malloc(1000), freed at the end only with "free"
//   alloc_freed: 32 x malloc(5000), freed at once
//   burn:        a fixed loop of a few hundred ms of CPU
// "free": nothing is in use at the end (the summary's heap line must still be there).
#include <stdlib.h>
#include <string.h>

#include "sampling_util.h"

static void* kept[64];
static volatile unsigned long sink;

NOINLINE void alloc_kept(void) {
  for (int i = 0; i < 64; ++i) {
    kept[i] = malloc(1000);
    memset(kept[i], i, 1000);
  }
  KEEP_FRAME();
}

NOINLINE void alloc_freed(void) {
  for (int i = 0; i < 32; ++i) {
    char* p = malloc(5000);
    p[0] = (char)i;
    sink += (unsigned long)p[0];
    free(p);
  }
  KEEP_FRAME();
}

NOINLINE void burn(void) {
  for (long i = 0; i < 300000000L; ++i) {
    sink += (unsigned long)i;
  }
  KEEP_FRAME();
}

int main(int argc, char** argv) {
  sampling_die_with_parent();
  alloc_kept();
  alloc_freed();
  burn();
  if (argc > 1 && strcmp(argv[1], "free") == 0) {
    for (int i = 0; i < 64; ++i) {
      free(kept[i]);
    }
  }
  return 0;
}
