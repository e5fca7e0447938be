// SPDX-License-Identifier: MIT
// CuIndex: address -> compile unit of a module, from each CU's own DW_AT_low_pc/high_pc/
// ranges. libdwfl finds a pc's CU through .debug_aranges (dwfl_module_addrdie), and libdw
// 0.188 does not build aranges from the CUs when that section is missing, so a module
// without it has no CU, no line and no inlined frame for any pc: Go binaries (the Go linker
// writes no .debug_aranges), which is why eu-addr2line answers ??:0 for them. This index is
// the fallback, built once per module and only when the aranges lookup fails.
#pragma once

#include <elfutils/libdw.h>

#include <cstdint>
#include <optional>
#include <vector>

typedef struct Dwfl_Module Dwfl_Module;  // NOLINT: libdwfl's C handle

namespace profctl {

class CuIndex {
 public:
  // Reads the ranges of every CU of `mod`'s DWARF (untrusted: empty or inverted ranges are
  // skipped, and the walk is bounded); indexes nothing when the module has .debug_aranges.
  explicit CuIndex(Dwfl_Module* mod);

  // The CU whose ranges hold `addr` (a DWARF address: target address minus `bias()`), as a
  // DIE of `mod`'s Dwarf; nullopt when none does.
  std::optional<Dwarf_Die> find(Dwfl_Module* mod, uint64_t addr) const;
  uint64_t bias() const { return bias_; }

 private:
  struct Range {
    uint64_t start, end;  // [start, end), DWARF addresses
    Dwarf_Off cu;         // the CU DIE's offset: DIE pointers do not outlive a refresh
  };
  std::vector<Range> ranges_;  // sorted by start
  uint64_t bias_ = 0;
};

}  // namespace profctl
