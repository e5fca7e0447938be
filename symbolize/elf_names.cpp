// SPDX-License-Identifier: MIT
#include "symbolize/elf_names.h"

#include <elfutils/libdwfl.h>

#include <algorithm>
#include <cstring>
#include <string_view>
#include <tuple>

#include "base/eh_frame_hdr.h"

namespace profctl {
namespace {

// Bounds on what a sane ELF file holds; anything bigger is treated as malformed.
constexpr size_t kMaxSections = 1 << 16;
constexpr size_t kMaxRelocations = 1 << 22;

struct Section {
  GElf_Shdr hdr{};
  Elf_Data* data = nullptr;  // nullptr for SHT_NOBITS or unreadable sections
};

// The raw bytes of a section, checked against its header.
std::string_view bytes(const Section& s) {
  if (s.data == nullptr || s.data->d_buf == nullptr) {
    return {};
  }
  return {static_cast<const char*>(s.data->d_buf), s.data->d_size};
}

std::vector<Section> sections(Elf* elf, size_t& shstrndx,
                              std::vector<std::pair<std::string, size_t>>& names) {
  std::vector<Section> out;
  if (elf_getshdrstrndx(elf, &shstrndx) != 0) {
    return out;
  }
  for (Elf_Scn* scn = elf_nextscn(elf, nullptr); scn != nullptr && out.size() < kMaxSections;
       scn = elf_nextscn(elf, scn)) {
    Section s;
    if (gelf_getshdr(scn, &s.hdr) == nullptr) {
      continue;
    }
    if (s.hdr.sh_type != SHT_NOBITS) {
      s.data = elf_getdata(scn, nullptr);
    }
    const char* name = elf_strptr(elf, shstrndx, s.hdr.sh_name);
    names.emplace_back(name != nullptr ? name : "", elf_ndxscn(scn));
    out.push_back(s);
  }
  return out;
}

// GOT slot address -> symbol, from the JUMP_SLOT and GLOB_DAT relocations of every SHT_RELA
// section, and the symbols of .rela.plt in order (a lazy PLT entry pushes its index there).
struct Relocations {
  std::unordered_map<uint64_t, std::string> by_slot;
  std::vector<std::string> plt_order;
};

Relocations read_relocations(Elf* elf, const std::vector<Section>& secs,
                             const std::vector<std::pair<std::string, size_t>>& names) {
  Relocations out;
  auto by_index = [&](size_t ndx) -> const Section* {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i].second == ndx) {
        return &secs[i];
      }
    }
    return nullptr;
  };
  for (size_t i = 0; i < secs.size(); ++i) {
    const Section& rel = secs[i];
    if (rel.hdr.sh_type != SHT_RELA || rel.data == nullptr) {
      continue;
    }
    const Section* symtab = by_index(rel.hdr.sh_link);
    if (symtab == nullptr || symtab->data == nullptr) {
      continue;
    }
    const bool is_plt = names[i].first == ".rela.plt";
    const size_t count = std::min(rel.data->d_size / sizeof(Elf64_Rela), kMaxRelocations);
    for (size_t r = 0; r < count; ++r) {
      GElf_Rela rela;
      if (gelf_getrela(rel.data, static_cast<int>(r), &rela) == nullptr) {
        break;
      }
      const auto type = GELF_R_TYPE(rela.r_info);
      std::string name;
      GElf_Sym sym;
      if ((type == R_X86_64_JUMP_SLOT || type == R_X86_64_GLOB_DAT) &&
          gelf_getsym(symtab->data, static_cast<int>(GELF_R_SYM(rela.r_info)), &sym) != nullptr) {
        // elf_strptr checks the offset against the string section.
        if (const char* s = elf_strptr(elf, symtab->hdr.sh_link, sym.st_name); s != nullptr) {
          name = s;
        }
      }
      if (is_plt) {
        out.plt_order.push_back(name);
      }
      if (!name.empty()) {
        out.by_slot.emplace(rela.r_offset, std::move(name));
      }
    }
  }
  return out;
}

uint32_t load32(std::string_view b, size_t at) {
  uint32_t v = 0;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}

// The symbol an x86-64 PLT entry jumps to. Every entry form ends in an indirect jump through
// its GOT slot, `ff 25 disp32` (jmp *disp(%rip)), possibly after endbr64 and a bnd prefix:
// .plt (lazy), .plt.sec (IBT) and .plt.got entries all do. The lazy .plt entries of an IBT
// binary do not (they push the relocation index and jump to PLT0): `68 imm32` names them.
std::string entry_target(std::string_view entry, uint64_t entry_addr, const Relocations& rel) {
  for (size_t i = 0; i + 6 <= entry.size(); ++i) {
    if (static_cast<uint8_t>(entry[i]) == 0xff && static_cast<uint8_t>(entry[i + 1]) == 0x25) {
      const auto disp = static_cast<int32_t>(load32(entry, i + 2));
      const uint64_t slot = entry_addr + i + 6 + static_cast<int64_t>(disp);
      if (auto it = rel.by_slot.find(slot); it != rel.by_slot.end()) {
        return it->second;
      }
    }
  }
  for (size_t i = 0; i + 5 <= entry.size(); ++i) {
    if (static_cast<uint8_t>(entry[i]) == 0x68) {
      const uint32_t index = load32(entry, i + 1);
      if (index < rel.plt_order.size()) {
        return rel.plt_order[index];
      }
    }
  }
  return {};
}

std::vector<NamedRange> read_plt(Elf* elf) {
  std::vector<NamedRange> out;
  GElf_Ehdr ehdr;
  if (gelf_getehdr(elf, &ehdr) == nullptr || ehdr.e_machine != EM_X86_64) {
    return out;  // the entry forms above are x86-64's
  }
  size_t shstrndx = 0;
  std::vector<std::pair<std::string, size_t>> names;
  const std::vector<Section> secs = sections(elf, shstrndx, names);
  const Relocations rel = read_relocations(elf, secs, names);
  if (rel.by_slot.empty()) {
    return out;
  }
  for (size_t i = 0; i < secs.size(); ++i) {
    const std::string& name = names[i].first;
    if (name != ".plt" && name != ".plt.sec" && name != ".plt.got") {
      continue;
    }
    const std::string_view b = bytes(secs[i]);
    const uint64_t addr = secs[i].hdr.sh_addr;
    // Entries are 16 bytes (8 in some .plt.got); .plt starts with the 16-byte PLT0.
    const uint64_t entsize = secs[i].hdr.sh_entsize == 8 ? 8 : 16;
    for (size_t off = name == ".plt" ? 16 : 0; off + entsize <= b.size(); off += entsize) {
      std::string target = entry_target(b.substr(off, entsize), addr + off, rel);
      if (!target.empty() && addr + off + entsize > addr) {
        out.push_back({addr + off, addr + off + entsize, target + "@plt"});
      }
    }
  }
  std::sort(out.begin(), out.end(),
            [](const NamedRange& a, const NamedRange& b) { return a.start < b.start; });
  return out;
}

// The function starts of .eh_frame_hdr (base/eh_frame_hdr.h).
std::vector<uint64_t> read_fde_starts(Elf* elf) {
  size_t nphdr = 0;
  if (elf_getphdrnum(elf, &nphdr) != 0) {
    return {};
  }
  for (size_t i = 0; i < nphdr && i < 4096; ++i) {
    GElf_Phdr ph;
    if (gelf_getphdr(elf, static_cast<int>(i), &ph) == nullptr || ph.p_type != PT_GNU_EH_FRAME) {
      continue;
    }
    Elf_Data* data =
        elf_getdata_rawchunk(elf, static_cast<int64_t>(ph.p_offset), ph.p_filesz, ELF_T_BYTE);
    if (data == nullptr || data->d_buf == nullptr) {
      return {};
    }
    return parse_eh_frame_hdr(std::string_view(static_cast<const char*>(data->d_buf), data->d_size),
                              ph.p_vaddr);
  }
  return {};
}

size_t leading_underscores(std::string_view name) {
  size_t n = 0;
  while (n < name.size() && name[n] == '_') {
    ++n;
  }
  return n;
}

// Lower is preferred (see preferred_alias).
auto alias_rank(std::string_view name, unsigned binding) {
  name = name.substr(0, name.find('@'));  // "read@@GLIBC_2.2.5" ranks as "read"
  const bool local = binding != STB_GLOBAL && binding != STB_WEAK;
  return std::make_tuple(local, leading_underscores(name), binding == STB_WEAK, name.size(),
                         std::string(name));
}

std::unordered_map<uint64_t, std::string> read_aliases(Dwfl_Module* mod) {
  std::unordered_map<uint64_t, std::string> best;
  std::unordered_map<uint64_t, unsigned> best_binding;
  const int n = dwfl_module_getsymtab(mod);
  for (int i = 1; i < n; ++i) {
    GElf_Sym sym;
    GElf_Addr addr = 0;
    GElf_Word shndx = 0;
    const char* name = dwfl_module_getsym_info(mod, i, &sym, &addr, &shndx, nullptr, nullptr);
    const int type = GELF_ST_TYPE(sym.st_info);
    if (name == nullptr || *name == '\0' || shndx == SHN_UNDEF ||
        (type != STT_FUNC && type != STT_GNU_IFUNC)) {
      continue;
    }
    const unsigned binding = GELF_ST_BIND(sym.st_info);
    auto it = best.find(addr);
    if (it == best.end()) {
      best.emplace(addr, name);
      best_binding[addr] = binding;
    } else if (alias_rank(name, binding) < alias_rank(it->second, best_binding[addr])) {
      it->second = name;
      best_binding[addr] = binding;
    }
  }
  return best;
}

}  // namespace

ModuleNames::ModuleNames(Dwfl_Module* mod) {
  GElf_Addr bias = 0;
  if (Elf* elf = dwfl_module_getelf(mod, &bias); elf != nullptr) {
    plt_ = read_plt(elf);
    fde_starts_ = read_fde_starts(elf);
  }
  aliases_ = read_aliases(mod);
}

const NamedRange* ModuleNames::plt_entry(uint64_t elf_addr) const {
  auto it = std::upper_bound(plt_.begin(), plt_.end(), elf_addr,
                             [](uint64_t a, const NamedRange& r) { return a < r.start; });
  if (it == plt_.begin()) {
    return nullptr;
  }
  --it;
  return elf_addr < it->end ? &*it : nullptr;
}

std::optional<std::string> ModuleNames::preferred_alias(uint64_t addr) const {
  auto it = aliases_.find(addr);
  if (it == aliases_.end()) {
    return std::nullopt;
  }
  return it->second;
}

}  // namespace profctl

namespace profctl {

std::optional<uint64_t> ModuleNames::fde_start(uint64_t elf_addr) const {
  auto it = std::upper_bound(fde_starts_.begin(), fde_starts_.end(), elf_addr);
  if (it == fde_starts_.begin()) {
    return std::nullopt;
  }
  return *--it;
}

}  // namespace profctl
