// SPDX-License-Identifier: MIT
// heap_ctor: a program linked against libheap_ctor_lib.so, whose constructor allocates 12,345
// bytes before main. main then allocates 48 bytes 10 times from main_alloc (kept), prints
// "done" and exits 0. A heap profile from the first instruction holds both sites exactly.
#include <stdio.h>
#include <stdlib.h>

#include "sampling_util.h"

int heap_ctor_lib_ready(void);

static void* volatile kept[10];

NOINLINE static void main_alloc(void) {
  for (int i = 0; i < 10; ++i) {
    kept[i] = malloc(48);
  }
  KEEP_FRAME();
}

int main(void) {
  sampling_die_with_parent();
  if (!heap_ctor_lib_ready()) {
    return 1;
  }
  main_alloc();
  puts("done");
  return 0;
}
