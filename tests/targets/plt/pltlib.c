// SPDX-License-Identifier: MIT
// libpltlib.so: a shared library built without debug info and stripped (.symtab removed,
// .dynsym and .eh_frame kept), for the pprof and naming tests:
//   lib_spin  exported (named by .dynsym), calls
//   lib_inner static: no name at all once stripped; named by its CFI start
//             ("libpltlib.so+0x<start>", the value `nm` gives for it before stripping)
//   lib_nop   exported and tiny: called in a tight loop through the caller's PLT
#include "../target_util.h"

static volatile unsigned long lib_sink;

__attribute__((noinline, noclone)) static unsigned long lib_inner(unsigned long x) {
  unsigned long acc = x;
  for (int i = 0; i < 4000; ++i) {
    acc = acc * 6364136223846793005UL + 1442695040888963407UL;
    lib_sink += acc >> 33;
  }
  return acc;
}

unsigned long lib_spin(unsigned long x) {
  unsigned long r = lib_inner(x);
  KEEP_FRAME();
  return r + 1;
}

int lib_nop(int x) { return x + 1; }
