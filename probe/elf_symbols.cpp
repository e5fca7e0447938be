// SPDX-License-Identifier: MIT
#include "probe/elf_symbols.h"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <set>

#include "base/eh_frame_hdr.h"
#include "base/fd.h"

namespace profctl::probe {
namespace {

struct ElfDeleter {
  void operator()(Elf* e) const { elf_end(e); }
};
using ElfPtr = std::unique_ptr<Elf, ElfDeleter>;

constexpr uint64_t kPage = 4096;

Error elf_error(const std::string& path, const std::string& what) {
  const char* msg = elf_errmsg(-1);
  return Error{path + ": " + what + (msg != nullptr ? std::string(": ") + msg : ""), 0};
}

}  // namespace

namespace {

std::string build_id_of(Elf* elf) {
  for (Elf_Scn* scn = elf_nextscn(elf, nullptr); scn != nullptr; scn = elf_nextscn(elf, scn)) {
    GElf_Shdr sh;
    if (gelf_getshdr(scn, &sh) == nullptr || sh.sh_type != SHT_NOTE) {
      continue;
    }
    Elf_Data* data = elf_getdata(scn, nullptr);
    if (data == nullptr) {
      continue;
    }
    size_t off = 0;
    GElf_Nhdr nh;
    size_t name_off = 0;
    size_t desc_off = 0;
    while ((off = gelf_getnote(data, off, &nh, &name_off, &desc_off)) > 0) {
      if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 &&
          std::string_view(static_cast<const char*>(data->d_buf) + name_off, 3) == "GNU" &&
          nh.n_descsz > 0 && nh.n_descsz <= 64) {
        static const char* kHex = "0123456789abcdef";
        std::string out;
        const auto* b = static_cast<const unsigned char*>(data->d_buf) + desc_off;
        for (size_t i = 0; i < nh.n_descsz; ++i) {
          out += kHex[b[i] >> 4];
          out += kHex[b[i] & 15];
        }
        return out;
      }
    }
  }
  return "";
}

Result<ElfModuleSymbols> read_functions(const std::string& path, std::span<const std::string> names,
                                        const ElfModuleSymbols* module);

}  // namespace

Result<ElfModuleSymbols> read_elf_functions(const std::string& path,
                                            std::span<const std::string> names) {
  return read_functions(path, names, nullptr);
}

Result<ElfModuleSymbols> read_debug_functions(const std::string& debug_path,
                                              std::span<const std::string> names,
                                              const ElfModuleSymbols& module) {
  return read_functions(debug_path, names, &module);
}

std::string debug_file_for_build_id(const std::string& build_id) {
  if (build_id.size() < 4 || build_id.size() > 128) {
    return "";
  }
  std::string p =
      "/usr/lib/debug/.build-id/" + build_id.substr(0, 2) + "/" + build_id.substr(2) + ".debug";
  return access(p.c_str(), R_OK) == 0 ? p : "";
}

namespace {

// The program headers: the loadable segments and, unless `debug` (a debug file's own
// segments hold no code), .eh_frame_hdr's function starts.
Result<void> read_segments(Elf* elf, const std::string& path, bool debug, ElfModuleSymbols& out) {
  size_t phnum = 0;
  if (elf_getphdrnum(elf, &phnum) != 0) {
    return elf_error(path, "no program headers");
  }
  for (size_t i = 0; i < phnum; ++i) {
    GElf_Phdr ph;
    if (gelf_getphdr(elf, static_cast<int>(i), &ph) == nullptr) {
      return elf_error(path, "bad program header");
    }
    if (ph.p_type == PT_GNU_EH_FRAME && !debug) {
      Elf_Data* d =
          elf_getdata_rawchunk(elf, static_cast<int64_t>(ph.p_offset), ph.p_filesz, ELF_T_BYTE);
      if (d != nullptr && d->d_buf != nullptr) {
        out.function_starts = parse_eh_frame_hdr(
            std::string_view(static_cast<const char*>(d->d_buf), d->d_size), ph.p_vaddr);
      }
    }
    if (ph.p_type == PT_LOAD) {
      out.segments.push_back(
          {ph.p_vaddr, ph.p_memsz, ph.p_offset, ph.p_filesz, (ph.p_flags & PF_X) != 0});
    }
  }
  return {};
}

bool in_executable_segment(const ElfModuleSymbols& m, uint64_t value, uint64_t size) {
  return std::any_of(m.segments.begin(), m.segments.end(), [&](const ElfLoadSegment& s) {
    return s.executable && value >= s.vaddr && value - s.vaddr < s.filesz &&
           size <= s.filesz - (value - s.vaddr);
  });
}

// The wanted functions of one symbol table section into out.functions: a later table
// only adds a size to an unsized entry at the same value, never replaces a sized one.
Result<void> read_symbol_table(Elf* elf, Elf_Scn* scn, const GElf_Shdr& sh, const std::string& path,
                               const std::set<std::string_view>& wanted, ElfModuleSymbols& out) {
  if (sh.sh_entsize != sizeof(Elf64_Sym)) {
    return Error{path + ": symbol table with entry size " + std::to_string(sh.sh_entsize), 0};
  }
  Elf_Data* data = elf_getdata(scn, nullptr);
  if (data == nullptr) {
    return elf_error(path, "unreadable symbol table");
  }
  size_t count = data->d_size / sizeof(Elf64_Sym);
  for (size_t i = 0; i < count; ++i) {
    GElf_Sym sym;
    if (gelf_getsym(data, static_cast<int>(i), &sym) == nullptr) {
      return elf_error(path, "bad symbol");
    }
    int st_type = GELF_ST_TYPE(sym.st_info);
    if (sym.st_shndx == SHN_UNDEF || (st_type != STT_FUNC && st_type != STT_GNU_IFUNC)) {
      continue;
    }
    const char* name = elf_strptr(elf, sh.sh_link, sym.st_name);
    if (name == nullptr || !wanted.contains(name)) {
      continue;
    }
    if (!in_executable_segment(out, sym.st_value, sym.st_size)) {
      return Error{path + ": symbol " + name + " lies outside the executable segments", 0};
    }
    auto [it, inserted] = out.functions.try_emplace(name);
    if (inserted || (it->second.size == 0 && it->second.value == sym.st_value)) {
      it->second = ElfFunction{sym.st_value, sym.st_size, st_type == STT_GNU_IFUNC};
    }
  }
  return {};
}

// The jump-slot relocations of every SHT_RELA section, named by its symbol table.
void read_plt_slots(Elf* elf, ElfModuleSymbols& out) {
  constexpr size_t kMaxSlots = 1 << 16;
  for (Elf_Scn* scn = elf_nextscn(elf, nullptr); scn != nullptr; scn = elf_nextscn(elf, scn)) {
    GElf_Shdr sh;
    if (gelf_getshdr(scn, &sh) == nullptr || sh.sh_type != SHT_RELA ||
        sh.sh_entsize != sizeof(Elf64_Rela)) {
      continue;
    }
    Elf_Scn* symscn = elf_getscn(elf, sh.sh_link);
    GElf_Shdr symsh;
    if (symscn == nullptr || gelf_getshdr(symscn, &symsh) == nullptr ||
        symsh.sh_entsize != sizeof(Elf64_Sym)) {
      continue;
    }
    Elf_Data* rel = elf_getdata(scn, nullptr);
    Elf_Data* syms = elf_getdata(symscn, nullptr);
    if (rel == nullptr || syms == nullptr) {
      continue;
    }
    const size_t count = rel->d_size / sizeof(Elf64_Rela);
    for (size_t i = 0; i < count && out.plt_slots.size() < kMaxSlots; ++i) {
      GElf_Rela r;
      GElf_Sym sym;
      if (gelf_getrela(rel, static_cast<int>(i), &r) == nullptr ||
          GELF_R_TYPE(r.r_info) != R_X86_64_JUMP_SLOT ||
          gelf_getsym(syms, static_cast<int>(GELF_R_SYM(r.r_info)), &sym) == nullptr) {
        continue;
      }
      if (const char* name = elf_strptr(elf, symsh.sh_link, sym.st_name); name && *name) {
        out.plt_slots.emplace(r.r_offset, name);
      }
    }
  }
}

Result<ElfModuleSymbols> read_functions(const std::string& path, std::span<const std::string> names,
                                        const ElfModuleSymbols* module) {
  if (elf_version(EV_CURRENT) == EV_NONE) {
    return Error{"libelf: version mismatch", 0};
  }
  auto fd = Fd::open(path, O_RDONLY);
  if (!fd) {
    return fd.error();
  }
  ElfPtr elf(elf_begin(fd->get(), ELF_C_READ, nullptr));
  if (!elf || elf_kind(elf.get()) != ELF_K_ELF) {
    return elf_error(path, "not an ELF file");
  }
  GElf_Ehdr eh;
  if (gelf_getehdr(elf.get(), &eh) == nullptr || gelf_getclass(elf.get()) != ELFCLASS64 ||
      eh.e_machine != EM_X86_64) {
    return Error{path + ": not an x86-64 ELF64 file", 0};
  }
  ElfModuleSymbols out;
  out.pie_or_shared = eh.e_type == ET_DYN;
  out.build_id = build_id_of(elf.get());
  if (auto r = read_segments(elf.get(), path, module != nullptr, out); !r) {
    return r.error();
  }
  if (module != nullptr) {
    out.segments = module->segments;  // a debug file's own segments hold no code
    out.pie_or_shared = module->pie_or_shared;
  } else {
    read_plt_slots(elf.get(), out);
  }
  const std::set<std::string_view> wanted(names.begin(), names.end());
  // .symtab after .dynsym: it may carry sizes a stripped .dynsym lacks, never replaces a
  // sized entry.
  for (Elf64_Word type : {SHT_DYNSYM, SHT_SYMTAB}) {
    for (Elf_Scn* scn = elf_nextscn(elf.get(), nullptr); scn != nullptr;
         scn = elf_nextscn(elf.get(), scn)) {
      GElf_Shdr sh;
      if (gelf_getshdr(scn, &sh) == nullptr) {
        return elf_error(path, "bad section header");
      }
      if (sh.sh_type != type) {
        continue;
      }
      if (auto r = read_symbol_table(elf.get(), scn, sh, path, wanted, out); !r) {
        return r.error();
      }
    }
  }
  return out;
}

}  // namespace

Result<uint64_t> load_bias(const ElfModuleSymbols& module, const std::vector<MapEntry>& maps,
                           std::string_view path) {
  if (!module.pie_or_shared) {
    return uint64_t{0};
  }
  for (const ElfLoadSegment& seg : module.segments) {
    uint64_t file_page = seg.offset / kPage * kPage;
    for (const MapEntry& m : maps) {
      if (m.path == path && m.offset == file_page) {
        return m.start - seg.vaddr / kPage * kPage;
      }
    }
  }
  return Error{std::string(path) + ": not mapped (no PT_LOAD segment found in the maps)", 0};
}

}  // namespace profctl::probe
