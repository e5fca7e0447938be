// SPDX-License-Identifier: MIT
// heap_int3 [N]: an executable that defines its own malloc, which the dynamic linker
// resolves before libc's, and whose first bytes hold a branch target (a loop back to byte
// 2): no jump can be patched over it, so profctl must fall back to a breakpoint there and
// still record every call. malloc_from_here() calls it N times (default 100) for 48 bytes
// and frees nothing; then "done" on stdout and exit 0.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>

#include "sampling_util.h"

extern void* __libc_malloc(size_t);

__asm__(
    ".text\n"
    ".globl malloc\n"
    ".type malloc, @function\n"
    "malloc:\n"
    "  .cfi_startproc\n"
    "  xor %eax, %eax\n"       // 2 bytes
    "1:\n"                     // a branch target at byte 2
    "  cmp $1, %eax\n"
    "  je 2f\n"
    "  inc %eax\n"
    "  jmp 1b\n"
    "2:\n"
    "  jmp __libc_malloc@PLT\n"
    "  .cfi_endproc\n"
    ".size malloc, .-malloc\n");

static void* volatile kept[1024];

NOINLINE void malloc_from_here(int n) {
  for (int i = 0; i < n && i < 1024; ++i) {
    kept[i] = malloc(48);
  }
  KEEP_FRAME();
}

int main(int argc, char** argv) {
  sampling_die_with_parent();
  malloc_from_here(argc > 1 ? atoi(argv[1]) : 100);
  puts("done");
  return 0;
}
