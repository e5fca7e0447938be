// SPDX-License-Identifier: MIT
// Which allocation functions enter another probed one. An allocator's entry points often
// funnel into each other: tcmalloc's posix_memalign calls tc_memalign, its valloc jumps
// there; mimalloc's valloc, memalign, aligned_alloc and posix_memalign reach
// mi_malloc_aligned; glibc's memalign calls malloc for small alignments. An unsampled outer
// call that takes no frame would let the inner probe sample the same allocation again (two
// draws for one call, at every rate but 1). Such sites get PROBE_SITE_NESTS: every call
// goes through a frame whose depth keeps the inner probe quiet.
//
// Found by reading code: the direct call and jump targets of the function, a PLT stub among
// them named by the module's jump-slot relocation (bound or not yet: jemalloc and tcmalloc
// bind lazily), and the same up to two levels further down inside the module (mimalloc's
// valloc jumps through its PLT to mi_valloc, which jumps to mi_memalign, which calls
// mi_malloc_aligned).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "probe/wait_sites.h"  // ReadCode, FunctionLength

namespace profctl::probe {

struct NestingScan {
  ReadCode read;          // the target's code
  FunctionLength length;  // of the module's functions (process addresses); 0 = unknown
  uint64_t module_lo = 0;
  uint64_t module_hi = 0;  // only functions in [lo, hi) are followed further down
  // The module's jump slots: the GOT slot's process address -> the symbol it binds.
  std::map<uint64_t, std::string> plt_slots;
  // The address of a function the module defines (by name), for a slot not bound yet.
  std::function<std::optional<uint64_t>(const std::string&)> defined;
  std::set<uint64_t> probed;           // probed allocation entries, every module
  std::set<std::string> probed_names;  // and the names they were found by
};

// True when the function [entry, entry + size) (size 0: up to its CFI length, else a
// window) calls or jumps to a probed allocation entry other than itself, directly, through
// its PLT, or through up to two functions of the module in between.
bool enters_probed(const NestingScan& scan, uint64_t entry, uint64_t size);

}  // namespace profctl::probe
