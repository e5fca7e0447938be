// SPDX-License-Identifier: MIT
#include "capture/lock_names.h"

#include <array>
#include <cstdlib>

#include "capture/capture_assembly.h"
#include "probe/probes.h"
#include "symbolize/data_symbol.h"

namespace profctl {

bool is_allocator_function(std::string_view f) {
  // The allocation entry points the heap probes record (glibc's, jemalloc's mallocx,
  // tcmalloc's tc_*, mimalloc's mi_*), and strdup.
  if (probe::is_heap_allocation_name(f) || f == "strdup") {
    return true;
  }
  // "operator new(unsigned long)", "operator new[](unsigned long, std::align_val_t)", ...
  if (f.starts_with("operator new")) {
    return true;
  }
  // Inlined allocator plumbing between operator new and the code that wanted the object.
  static constexpr std::array<std::string_view, 4> kPlumbing = {
      "std::allocator", "std::__new_allocator", "__gnu_cxx::new_allocator",
      "std::allocator_traits"};
  for (std::string_view p : kPlumbing) {
    if (f.starts_with(p)) {
      return true;
    }
  }
  return false;
}

std::optional<std::string> LockNamer::allocated_in(uint64_t address) const {
  if (heap_ == nullptr) {
    return std::nullopt;
  }
  auto stack = heap_->tracker().allocation_stack(address);
  if (!stack) {
    return std::nullopt;
  }
  for (const Frame& f : symbolize_stack(heap_->stacks().get(*stack), sym_)) {
    if (f.function && !is_allocator_function(*f.function)) {
      return *f.function;
    }
  }
  return std::nullopt;
}

void LockNamer::name(Profile& p) const {
  for (Sample& s : p.samples) {
    auto it = s.labels.find("lock");
    if (it == s.labels.end()) {
      continue;
    }
    const uint64_t addr = std::strtoull(it->second.c_str(), nullptr, 16);
    if (auto name = data_symbol(dwfl_, addr)) {
      s.labels["lock_name"] = *name;
    } else if (auto where = allocated_in(addr)) {
      s.labels["lock_name"] = "heap object allocated in " + *where;
    }
  }
}

}  // namespace profctl
