// SPDX-License-Identifier: MIT
// Where a launched program's probes go in: after the dynamic linker has mapped and relocated
// every library the program needs, before any of their initializers runs. ld.so calls its
// empty function _dl_debug_state at each change of its link map, with r_debug.r_state saying
// which (RT_ADD while it loads, RT_CONSISTENT when done): the debugger interface that gdb
// uses to see libraries at start-up. Its first RT_CONSISTENT call at start-up comes after
// relocation and before _dl_init runs the constructors (glibc's rtld.c, dl_main).
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "base/result.h"

namespace profctl::probe {

// The run-time address of ld.so's _dl_debug_state in a program held at its exec, checked
// to be a bare `ret` (with or without endbr64), which run_to_hook's declined hits rely on.
// An error for a static program (no ld.so: AT_BASE 0) or an ld.so without the symbol.
Result<uint64_t> dynamic_linker_hook(pid_t pid);

// True when the program (stopped) has its link map complete: the executable's DT_DEBUG
// points to an r_debug whose state is RT_CONSISTENT with a non-empty map. False while the
// dynamic linker is still adding, or before it has published r_debug at all.
bool link_map_consistent(pid_t pid);

}  // namespace profctl::probe
