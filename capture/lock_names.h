// SPDX-License-Identifier: MIT
// The block and mutex samples' "lock" label named (lock_name): by the static symbol that
// holds the lock, or, for a lock inside a heap object the heap profile saw allocated, by
// the function that allocated it — the first frame of the allocation's stack above the
// allocator, found by the allocator's function names (malloc, operator new, ...), wherever
// the allocator is linked from.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "profile/heap_collector.h"
#include "report/capture.h"
#include "symbolize/symbolizer.h"
#include "unwind/target_dwfl.h"

namespace profctl {

// A function that allocates for its caller: the C and POSIX allocation entry points
// (the ones the heap probes are placed on), C++'s operator new and new[] in all their
// overloads, and the standard library's allocator templates inlined above them.
bool is_allocator_function(std::string_view demangled);

class LockNamer {
 public:
  // `heap`: the heap profile's collector, finished (null: no heap profile).
  LockNamer(const TargetDwfl& dwfl, Symbolizer& sym, HeapCollector* heap)
      : dwfl_(dwfl), sym_(sym), heap_(heap) {}
  // Sets lock_name beside every "lock" label it can name.
  void name(Profile& p) const;

 private:
  std::optional<std::string> allocated_in(uint64_t address) const;

  const TargetDwfl& dwfl_;
  Symbolizer& sym_;
  HeapCollector* heap_;
};

}  // namespace profctl
