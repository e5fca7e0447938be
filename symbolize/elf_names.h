// SPDX-License-Identifier: MIT
// ModuleNames: the names of one module that its ELF symbol lookup does not give directly:
// PLT entries ("memcmp@plt", which have no symbol of their own) and the public alias among
// several symbols at one address ("read" rather than "__GI___libc_read"). Built once per
// module from its ELF file, which is untrusted input: every index, offset and size read from
// it is checked before use, and a malformed part only leaves names out.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

typedef struct Dwfl_Module Dwfl_Module;  // NOLINT: libdwfl's C handle

namespace profctl {

struct NamedRange {
  uint64_t start = 0;  // ELF address (Frame::offset terms)
  uint64_t end = 0;
  std::string name;
};

class ModuleNames {
 public:
  // Reads the sections, dynamic relocations and symbol table of `mod` (its main ELF file and
  // whichever symbol table libdwfl uses for it, .symtab of the debug file or .dynsym).
  explicit ModuleNames(Dwfl_Module* mod);

  // The PLT entry that holds ELF address `elf_addr`, named "<symbol>@plt".
  const NamedRange* plt_entry(uint64_t elf_addr) const;

  // The preferred name of the function symbols whose value is `addr` (a target address, as
  // libdwfl's symbol lookup gives it), version suffix still on; nullopt when none is known.
  // Preference, as perf's: a global or weak symbol over a local one (glibc's __GI_* aliases
  // are local), then the fewest leading underscores ("read" over "__libc_read" and
  // "__read"), then global over weak, then the shorter name, then the first in byte order.
  std::optional<std::string> preferred_alias(uint64_t addr) const;

  // The start of the last FDE that starts at or before ELF address `elf_addr`, from the
  // binary search table of .eh_frame_hdr (PT_GNU_EH_FRAME, there in stripped files too).
  // Whether an FDE covers the address at all is the caller's to check (dwarf_cfi_addrframe:
  // libdw's Dwarf_Frame only says where the matching CFI row starts, not the FDE).
  std::optional<uint64_t> fde_start(uint64_t elf_addr) const;

 private:
  std::vector<NamedRange> plt_;  // sorted by start
  std::unordered_map<uint64_t, std::string> aliases_;
  std::vector<uint64_t> fde_starts_;  // sorted
};

}  // namespace profctl
