// SPDX-License-Identifier: MIT
// Helpers shared by the unwind/ and symbolize/ unit tests: where things are in the symfix
// fixtures (tests/unit/fixtures/symfix.cpp, built by fixtures.cmake).
#pragma once

#include <elfutils/libdwfl.h>

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>

namespace profctl::testing {

// The 1-based line of the source line that holds "MARK:<name>" in symfix.cpp.
inline int marker_line(const std::string& name) {
  std::ifstream in(SYMFIX_SOURCE);
  std::string line;
  int n = 0;
  const std::string needle = "MARK:" + name;
  while (std::getline(in, line)) {
    ++n;
    size_t at = line.find(needle);
    if (at != std::string::npos &&
        (at + needle.size() == line.size() || line[at + needle.size()] == ' ')) {
      return n;
    }
  }
  return -1;
}

inline std::string basename_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

struct SymbolAt {
  uint64_t addr = 0;      // Dwfl address (bias applied)
  uint64_t elf_addr = 0;  // st_value: the ELF-relative address
  uint64_t size = 0;
  uint64_t bias = 0;
};

// The symtab (or dynsym) entry `name` of the one module whose name contains `module_part`.
inline std::optional<SymbolAt> find_symbol(Dwfl* dwfl, const std::string& module_part,
                                           const std::string& name) {
  struct Ctx {
    const std::string* part;
    const std::string* name;
    std::optional<SymbolAt> out;
  } ctx{&module_part, &name, std::nullopt};
  auto cb = [](Dwfl_Module* mod, void**, const char* modname, Dwarf_Addr, void* arg) -> int {
    auto* c = static_cast<Ctx*>(arg);
    if (modname == nullptr || std::string(modname).find(*c->part) == std::string::npos) {
      return DWARF_CB_OK;
    }
    int n = dwfl_module_getsymtab(mod);
    for (int i = 0; i < n; ++i) {
      GElf_Sym sym;
      GElf_Addr addr = 0;
      GElf_Word shndx = 0;
      Elf* elf = nullptr;
      Dwarf_Addr bias = 0;
      const char* s = dwfl_module_getsym_info(mod, i, &sym, &addr, &shndx, &elf, &bias);
      if (s != nullptr && *c->name == s && sym.st_value != 0) {
        c->out = SymbolAt{addr, addr - bias, sym.st_size, bias};
        return DWARF_CB_ABORT;
      }
    }
    return DWARF_CB_OK;
  };
  dwfl_getmodules(dwfl, cb, &ctx, 0);
  return ctx.out;
}

// The load bias of the module whose name contains `module_part` (0 when absent).
inline uint64_t module_bias(Dwfl* dwfl, const std::string& module_part) {
  struct Ctx {
    const std::string* part;
    uint64_t bias = 0;
  } ctx{&module_part};
  auto cb = [](Dwfl_Module* mod, void**, const char* modname, Dwarf_Addr, void* arg) -> int {
    auto* c = static_cast<Ctx*>(arg);
    if (modname != nullptr && std::string(modname).find(*c->part) != std::string::npos) {
      Dwarf_Addr bias = 0;
      dwfl_module_getelf(mod, &bias);
      c->bias = bias;
      return DWARF_CB_ABORT;
    }
    return DWARF_CB_OK;
  };
  dwfl_getmodules(dwfl, cb, &ctx, 0);
  return ctx.bias;
}

}  // namespace profctl::testing
