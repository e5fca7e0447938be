// SPDX-License-Identifier: MIT
// dlopen_burn LIBRARY MS: loads LIBRARY with dlopen once running, spins MS milliseconds of
// CPU in its dlburn_spin, and exits at once. The samples in the library are its last: a
// profiler that unwinds them after the exit can no longer read the process's maps, so it
// must have read them while the process lived.
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "sampling_util.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: dlopen_burn LIBRARY MS\n");
    return 2;
  }
  sampling_die_with_parent();
  void* h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    fprintf(stderr, "dlopen_burn: %s\n", dlerror());
    return 2;
  }
  uint64_t (*spin)(uint64_t) = (uint64_t(*)(uint64_t))dlsym(h, "dlburn_spin");
  if (spin == NULL) {
    fprintf(stderr, "dlopen_burn: %s\n", dlerror());
    return 2;
  }
  printf("%llu\n", (unsigned long long)(spin((uint64_t)atoll(argv[2]) * 1000000ull) & 1));
  return 0;
}
