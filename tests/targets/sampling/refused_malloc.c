// SPDX-License-Identifier: MIT
// refused_malloc.so: an allocator whose malloc no probe can take. Its first instruction is a
// jrcxz (rel8 only: the relocator refuses to move it, and so does the breakpoint fallback);
// then it is glibc's malloc. Preloaded by allocators_test.cpp: the capture must say that the
// heap profile is empty, and why, in one line.
__asm__(
    "  .text\n"
    "  .globl malloc\n"
    "  .type malloc, @function\n"
    "malloc:\n"
    "  jrcxz 1f\n"
    "1:\n"
    "  jmp __libc_malloc@PLT\n"
    "  .size malloc, .-malloc\n");
