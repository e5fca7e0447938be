// SPDX-License-Identifier: MIT
// Probe sites in a module file: the value and size of named functions from .dynsym (and
// .symtab when present), and the module's load bias in a process. The file is untrusted
// input: libelf bounds-checks section data against the file; everything else (entry
// sizes, string indices, symbol ranges) is checked here.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attach/proc.h"
#include "base/result.h"

namespace profctl::probe {

struct ElfFunction {
  uint64_t value = 0;  // link-time address (add the load bias for the process address)
  uint64_t size = 0;   // 0 = unknown
  bool ifunc = false;  // STT_GNU_IFUNC: value is the resolver, not the function: not probeable
};

struct ElfLoadSegment {
  uint64_t vaddr = 0;
  uint64_t memsz = 0;
  uint64_t offset = 0;
  uint64_t filesz = 0;
  bool executable = false;
};

struct ElfModuleSymbols {
  bool pie_or_shared = false;             // ET_DYN: loaded at a bias; ET_EXEC: bias 0
  std::string build_id;                   // hex of NT_GNU_BUILD_ID; empty when the file has none
  std::vector<uint64_t> function_starts;  // link-time, sorted: .eh_frame_hdr's FDE starts
  std::vector<ElfLoadSegment> segments;
  std::map<std::string, ElfFunction, std::less<>> functions;  // the names that were found
  // The jump slots (R_X86_64_JUMP_SLOT): the GOT slot's link-time address -> the symbol it
  // binds, for telling which function a PLT stub calls, bound or not. Not for debug files.
  std::map<uint64_t, std::string> plt_slots;
};

// Looks up `names` (defined functions only). A name that is absent is simply not in the
// result; an unreadable or malformed file is an error.
Result<ElfModuleSymbols> read_elf_functions(const std::string& path,
                                            std::span<const std::string> names);

// The same lookup in a module's separate debug file (its .symtab names internal functions
// that .dynsym lacks). Its sections hold no code, so every symbol is checked against the
// executable segments of the module itself.
Result<ElfModuleSymbols> read_debug_functions(const std::string& debug_path,
                                              std::span<const std::string> names,
                                              const ElfModuleSymbols& module);

// The debug file of a module with this build id under /usr/lib/debug/.build-id (Debian's
// -dbg and -dbgsym packages), or "" when none is installed.
std::string debug_file_for_build_id(const std::string& build_id);

// The load bias of the module `path` in a process, from its maps: the mapping of the file
// offset of a PT_LOAD segment gives start - page_down(vaddr).
Result<uint64_t> load_bias(const ElfModuleSymbols& module, const std::vector<MapEntry>& maps,
                           std::string_view path);

}  // namespace profctl::probe
