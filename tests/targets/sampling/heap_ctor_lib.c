// SPDX-License-Identifier: MIT
// libheap_ctor_lib.so: a library whose constructor allocates 12,345 bytes and keeps them,
// before the program that needs it has run a single instruction of its own (ld.so's
// _dl_init runs it between loading the libraries and the program's entry point).
#include <stdlib.h>

#include "sampling_util.h"

void* volatile heap_ctor_kept;

NOINLINE static void ctor_alloc(void) {
  heap_ctor_kept = malloc(12345);
  KEEP_FRAME();
}

__attribute__((constructor)) static void heap_ctor_lib_init(void) { ctor_alloc(); }

// For the program to link against (its DT_NEEDED entry), and a check that the block is there.
int heap_ctor_lib_ready(void) { return heap_ctor_kept != NULL; }
