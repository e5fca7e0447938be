// SPDX-License-Identifier: MIT
#include "symbolize/cu_index.h"

#include <elfutils/libdwfl.h>

#include <algorithm>

namespace profctl {
namespace {

constexpr size_t kMaxCus = 1 << 20;
constexpr size_t kMaxRangesPerCu = 1 << 16;

}  // namespace

CuIndex::CuIndex(Dwfl_Module* mod) {
  Dwarf_Addr bias = 0;
  Dwarf* dw = dwfl_module_getdwarf(mod, &bias);
  if (dw == nullptr) {
    return;
  }
  bias_ = bias;
  // With .debug_aranges libdwfl's own lookup is complete: a pc it places in no CU has no
  // CU (hand-written assembly in libc), and indexing libc's thousands of CUs would be waste.
  Dwarf_Aranges* aranges = nullptr;
  size_t naranges = 0;
  if (dwarf_getaranges(dw, &aranges, &naranges) == 0 && naranges > 0) {
    return;
  }
  Dwarf_Off off = 0;
  Dwarf_Off next = 0;
  size_t header = 0;
  for (size_t n = 0;
       n < kMaxCus && dwarf_nextcu(dw, off, &next, &header, nullptr, nullptr, nullptr) == 0;
       ++n, off = next) {
    Dwarf_Die cu;
    if (dwarf_offdie(dw, off + header, &cu) == nullptr) {
      continue;
    }
    Dwarf_Addr base = 0;
    Dwarf_Addr start = 0;
    Dwarf_Addr end = 0;
    ptrdiff_t at = 0;
    for (size_t k = 0; k < kMaxRangesPerCu && (at = dwarf_ranges(&cu, at, &base, &start, &end)) > 0;
         ++k) {
      if (start < end) {
        ranges_.push_back({start, end, dwarf_dieoffset(&cu)});
      }
    }
  }
  std::sort(ranges_.begin(), ranges_.end(),
            [](const Range& a, const Range& b) { return a.start < b.start; });
}

std::optional<Dwarf_Die> CuIndex::find(Dwfl_Module* mod, uint64_t addr) const {
  auto it = std::upper_bound(ranges_.begin(), ranges_.end(), addr,
                             [](uint64_t a, const Range& r) { return a < r.start; });
  if (it == ranges_.begin() || addr >= (--it)->end) {
    return std::nullopt;
  }
  Dwarf_Addr bias = 0;
  Dwarf* dw = dwfl_module_getdwarf(mod, &bias);
  Dwarf_Die cu;
  if (dw == nullptr || dwarf_offdie(dw, it->cu, &cu) == nullptr) {
    return std::nullopt;
  }
  return cu;
}

}  // namespace profctl
