// SPDX-License-Identifier: MIT
// The order in which the dynamic linker searches a process's modules for a symbol: the
// link map's (r_debug.r_map) chain, read from the target. ld.so resolves `malloc` in the
// first module of its global scope that defines it: the executable, then LD_PRELOAD and
// /etc/ld.so.preload libraries, then the DT_NEEDED libraries breadth first, then libraries
// dlopen'd RTLD_GLOBAL; the chain lists them in that order. The maps do not: they are
// sorted by address, and ld.so maps each library below the previous one, so a preloaded
// allocator appears after libc there.
#pragma once

#include <string>
#include <vector>

#include "attach/proc.h"
#include "attach/target_memory.h"
#include "base/result.h"

namespace profctl::probe {

// The paths (as in `maps`) of the modules on the target's link map, in chain order. Every
// word is read from the target and checked: at most kMaxLinkMapEntries entries, each
// placed by its dynamic section (l_ld) in a file mapping of `maps` (l_name is the path ld.so
// opened, often through a symlink, and is not read). An error when the chain cannot be read
// (a static executable has none).
inline constexpr size_t kMaxLinkMapEntries = 4096;
Result<std::vector<std::string>> link_map_modules(TargetMemory& target,
                                                  const std::vector<MapEntry>& maps);

// r_debug.r_state of the target (RT_CONSISTENT, RT_ADD or RT_DELETE of <link.h>): an error
// while ld.so has not published r_debug (DT_DEBUG unset) or its map is still empty.
Result<int> link_map_state(TargetMemory& target);

// `modules` (link map order), then every other file mapped in `maps` that is not among them,
// in address order, with `exe` first when the link map is empty.
std::vector<std::string> search_order(const std::vector<std::string>& link_map,
                                      const std::vector<MapEntry>& maps, const std::string& exe);

}  // namespace profctl::probe
