// SPDX-License-Identifier: MIT
#include "symbolize/data_symbol.h"

#include <elfutils/libdwfl.h>

#include <cstdio>

namespace profctl {

std::optional<std::string> data_symbol(const TargetDwfl& dwfl, uint64_t address) {
  Dwfl* d = dwfl.get();
  if (d == nullptr || address == 0) {
    return std::nullopt;
  }
  Dwfl_Module* mod = dwfl_addrmodule(d, address);
  if (mod == nullptr) {
    return std::nullopt;
  }
  GElf_Off offset = 0;
  GElf_Sym sym;
  const char* name = dwfl_module_addrinfo(mod, address, &offset, &sym, nullptr, nullptr, nullptr);
  if (name == nullptr || *name == '\0' || GELF_ST_TYPE(sym.st_info) != STT_OBJECT ||
      (sym.st_size != 0 && offset >= sym.st_size)) {
    return std::nullopt;
  }
  std::string out = name;
  if (offset != 0) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "+0x%llx", static_cast<unsigned long long>(offset));
    out += buf;
  }
  return out;
}

}  // namespace profctl
