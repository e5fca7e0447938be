// SPDX-License-Identifier: MIT
#include "symbolize/symbolizer.h"

#include <cxxabi.h>
#include <dwarf.h>
#include <elfutils/libdwfl.h>

#include <cstdlib>
#include <string_view>
#include <unordered_map>

#include "base/log.h"
#include "symbolize/cu_index.h"
#include "symbolize/elf_names.h"

namespace profctl {
namespace {

// "__libc_start_main@@GLIBC_2.34" -> "__libc_start_main"; then C++ (Itanium ABI)
// demangling. A name that is not mangled comes back as it is.
std::string demangle(std::string_view name) {
  if (size_t at = name.find('@'); at != std::string_view::npos && at > 0) {
    name = name.substr(0, at);
  }
  std::string s(name);
  if (!s.starts_with("_Z")) {
    return s;
  }
  int status = 0;
  char* d = abi::__cxa_demangle(s.c_str(), nullptr, nullptr, &status);
  if (d == nullptr) {
    return s;
  }
  std::string out = status == 0 ? std::string(d) : s;
  std::free(d);
  return out;
}

// The mangled name of a subprogram or inlined subroutine, following DW_AT_abstract_origin
// and DW_AT_specification (the declaration inside the class has it), demangled. nullopt
// when the DIE has none (C functions, main).
std::optional<std::string> linkage_name(Dwarf_Die* die) {
  Dwarf_Attribute attr;
  for (unsigned at : {DW_AT_linkage_name, DW_AT_MIPS_linkage_name}) {
    if (dwarf_attr_integrate(die, at, &attr) != nullptr) {
      if (const char* s = dwarf_formstring(&attr); s != nullptr && *s != '\0') {
        return demangle(s);
      }
    }
  }
  return std::nullopt;
}

// The DIE's name qualified by its enclosing namespaces and classes: "ns::Klass::f". For
// functions with no linkage name (an inlined function with internal linkage often has
// none), so that the frame still says where the function lives. No parameter list.
std::optional<std::string> short_name(Dwarf_Die* die) {
  const char* s = dwarf_diename(die);  // integrates the abstract origin
  if (s == nullptr || *s == '\0') {
    return std::nullopt;
  }
  std::string name = s;
  // The scopes of the declaration: a concrete (inlined or out-of-line) DIE names its
  // abstract origin or declaration, which sits inside the namespace or class.
  Dwarf_Die decl = *die;
  Dwarf_Attribute attr;
  for (int hops = 0; hops < 4; ++hops) {
    Dwarf_Die next;
    if ((dwarf_attr(&decl, DW_AT_abstract_origin, &attr) == nullptr &&
         dwarf_attr(&decl, DW_AT_specification, &attr) == nullptr) ||
        dwarf_formref_die(&attr, &next) == nullptr) {
      break;
    }
    decl = next;
  }
  Dwarf_Die* scopes = nullptr;
  int n = dwarf_getscopes_die(&decl, &scopes);
  for (int i = 1; i < n; ++i) {
    int tag = dwarf_tag(&scopes[i]);
    if (tag == DW_TAG_namespace || tag == DW_TAG_class_type || tag == DW_TAG_structure_type ||
        tag == DW_TAG_union_type) {
      const char* scope = dwarf_diename(&scopes[i]);
      name.insert(0, std::string(scope != nullptr ? scope : "(anonymous namespace)") + "::");
    }
  }
  std::free(scopes);
  return name;
}

// True when the DIE's linkage name is an Itanium C++ mangled name.
bool is_mangled(Dwarf_Die* die) {
  Dwarf_Attribute attr;
  for (unsigned at : {DW_AT_linkage_name, DW_AT_MIPS_linkage_name}) {
    if (dwarf_attr_integrate(die, at, &attr) != nullptr) {
      const char* s = dwarf_formstring(&attr);
      return s != nullptr && std::string_view(s).starts_with("_Z");
    }
  }
  return false;
}

std::optional<std::string> die_function_name(Dwarf_Die* die) {
  if (auto n = linkage_name(die)) {
    return n;
  }
  return short_name(die);
}

struct ElfSymbol {
  std::string name;  // demangled, version suffix stripped
  uint64_t start;    // target address
};

// The ELF symbol (.symtab, else .dynsym) that contains `addr`, under its preferred alias
// (ModuleNames::preferred_alias): glibc's debug symtab has up to four names for one function
// ("__GI___libc_read", "__libc_read", "__read", "read") and libdwfl returns whichever it
// meets first; people and perf say "read".
std::optional<ElfSymbol> elf_symbol(Dwfl_Module* mod, const ModuleNames& names, Dwarf_Addr addr) {
  GElf_Off off = 0;
  GElf_Sym sym;
  const char* name = dwfl_module_addrinfo(mod, addr, &off, &sym, nullptr, nullptr, nullptr);
  if (name == nullptr || *name == '\0' || off > addr) {
    return std::nullopt;
  }
  const uint64_t start = addr - off;
  std::string best = names.preferred_alias(start).value_or(name);
  return ElfSymbol{demangle(best), start};
}

// Where the .eh_frame FDE that covers `addr` starts: the start of the function in a module
// that has no symbol for it (a stripped library keeps .eh_frame, as unwinding needs it). libdw
// finds the FDE (so a pc between functions gets none) but tells only where its CFI row
// starts; the FDE's own start comes from .eh_frame_hdr's table. A target address.
std::optional<uint64_t> cfi_function_start(Dwfl_Module* mod, const ModuleNames& names,
                                           Dwarf_Addr addr, Dwarf_Addr elf_bias) {
  Dwarf_Addr bias = 0;
  Dwarf_CFI* cfi = dwfl_module_eh_cfi(mod, &bias);
  Dwarf_Frame* frame = nullptr;
  if (cfi == nullptr || addr < bias || dwarf_cfi_addrframe(cfi, addr - bias, &frame) != 0) {
    return std::nullopt;
  }
  Dwarf_Addr row_start = 0;
  Dwarf_Addr row_end = 0;
  const int ra = dwarf_frame_info(frame, &row_start, &row_end, nullptr);
  std::free(frame);
  if (ra < 0 || addr < elf_bias) {
    return std::nullopt;
  }
  // The FDE holds its first row, so its start is the last table entry at or before it.
  auto start = names.fde_start(row_start + bias - elf_bias);
  if (!start) {
    return std::nullopt;
  }
  return *start + elf_bias;
}

struct SourcePos {
  std::optional<std::string> file;
  std::optional<int> line;
};

// Where the inlined subroutine `die` was called from: DW_AT_call_file (an index into its
// CU's file table) and DW_AT_call_line.
SourcePos call_site(Dwarf_Die* die) {
  SourcePos pos;
  Dwarf_Attribute attr;
  Dwarf_Word line = 0;
  if (dwarf_attr(die, DW_AT_call_line, &attr) != nullptr && dwarf_formudata(&attr, &line) == 0 &&
      line > 0 && line <= static_cast<Dwarf_Word>(INT32_MAX)) {
    pos.line = static_cast<int>(line);
  }
  Dwarf_Word file_idx = 0;
  Dwarf_Die cu;
  Dwarf_Files* files = nullptr;
  size_t nfiles = 0;
  if (dwarf_attr(die, DW_AT_call_file, &attr) != nullptr &&
      dwarf_formudata(&attr, &file_idx) == 0 &&
      dwarf_diecu(die, &cu, nullptr, nullptr) != nullptr &&
      dwarf_getsrcfiles(&cu, &files, &nfiles) == 0 && file_idx < nfiles) {
    if (const char* f = dwarf_filesrc(files, file_idx, nullptr, nullptr); f != nullptr) {
      pos.file = f;
    }
  }
  return pos;
}

// A module's path as frames name it: libdwfl calls the vdso "[vdso: PID]".
std::string module_path(std::string_view name) {
  return name.starts_with("[vdso") ? "[vdso]" : std::string(name);
}

// The frame of a pc in no module: its address is all there is.
std::vector<Frame> unknown_module_frame(uint64_t pc) {
  Frame phys;
  phys.pc = pc;
  phys.module = "[unknown]";
  phys.offset = pc;
  return {std::move(phys)};
}

// The function's start, module-relative: from its ELF symbol, else (a stripped module) from
// the .eh_frame FDE that covers it.
std::optional<uint64_t> function_start(Dwfl_Module* mod, const ModuleNames& names, Dwarf_Addr a,
                                       Dwarf_Addr bias, const std::optional<ElfSymbol>& sym) {
  if (sym && sym->start >= bias) {
    return sym->start - bias;
  }
  if (auto cfi_start = cfi_function_start(mod, names, a, bias)) {
    return *cfi_start - bias;
  }
  return std::nullopt;
}

// file:line from the module's line table (through .debug_aranges); empty when not found.
SourcePos line_of(Dwfl_Module* mod, Dwarf_Addr a) {
  SourcePos pos;
  if (Dwfl_Line* l = dwfl_module_getsrc(mod, a); l != nullptr) {
    int line = 0;
    const char* file = dwfl_lineinfo(l, nullptr, &line, nullptr, nullptr, nullptr);
    if (file != nullptr && line > 0) {
      pos.file = file;
      pos.line = line;
    }
  }
  return pos;
}

// file:line from one CU's line table, for a CU found by its ranges; empty when not found.
SourcePos line_in_cu(Dwarf_Die* cu, Dwarf_Addr addr) {
  SourcePos pos;
  if (Dwarf_Line* l = dwarf_getsrc_die(cu, addr); l != nullptr) {
    int line = 0;
    const char* file = dwarf_linesrc(l, nullptr, nullptr);
    if (file != nullptr && dwarf_lineno(l, &line) == 0 && line > 0) {
      pos.file = file;
      pos.line = line;
    }
  }
  return pos;
}

// The innermost concrete function DIE (subprogram, inlined subroutine or entry point) that
// contains `addr` (CU-relative).
std::optional<Dwarf_Die> innermost_function(Dwarf_Die* cu, Dwarf_Addr addr) {
  Dwarf_Die* scopes = nullptr;
  const int n = dwarf_getscopes(cu, addr, &scopes);
  std::optional<Dwarf_Die> fn;
  for (int i = 0; i < n; ++i) {
    const int tag = dwarf_tag(&scopes[i]);
    if (tag == DW_TAG_subprogram || tag == DW_TAG_inlined_subroutine || tag == DW_TAG_entry_point) {
      fn = scopes[i];
      break;
    }
  }
  std::free(scopes);
  return fn;
}

// The name of the physical frame's function from its subprogram DIE. A C++ function: its
// mangled DW_AT_linkage_name, demangled (the ELF symbol is the same name). A C function has
// no linkage name, or one that only says which asm name it got: glibc declares its functions
// under internal aliases, so DWARF says "__GI___clock_nanosleep" (linkage name) or
// "__libc_read" (DW_AT_name). There the ELF symbol's public alias wins: it is the name the
// program calls, the one perf shows and the one a person searches for; file:line still say
// where the code is.
std::optional<std::string> subprogram_name(Dwarf_Die* die, const std::optional<ElfSymbol>& sym) {
  std::optional<std::string> name = is_mangled(die) ? linkage_name(die) : std::nullopt;
  if (!name && sym) {
    name = sym->name;
  }
  if (!name) {
    name = short_name(die);
  }
  return name;
}

struct Key {
  uint64_t pc;
  bool activation;
  bool operator==(const Key&) const = default;
};

struct KeyHash {
  size_t operator()(const Key& k) const {
    return std::hash<uint64_t>()(k.pc * 2 + (k.activation ? 1 : 0));
  }
};

}  // namespace

struct Symbolizer::Impl {
  TargetDwfl& target;
  SymbolizeOptions opts;
  std::shared_ptr<SharedFrames> shared;
  // Per module (name and start): its file's key in `shared`, "" when it has no build-id.
  std::unordered_map<std::string, std::string> file_keys;
  // Node-based, so references handed out stay valid as the cache grows.
  std::unordered_map<Key, std::vector<Frame>, KeyHash> cache;
  // Per module, by name and start: a Dwfl_Module* dies when a refresh drops the module.
  std::unordered_map<std::string, std::unique_ptr<ModuleNames>> names;
  std::unordered_map<std::string, std::unique_ptr<CuIndex>> cu_indexes;

  const ModuleNames& module_names(Dwfl_Module* mod, std::string_view name, Dwarf_Addr start);
  const CuIndex& cu_index(Dwfl_Module* mod, std::string_view name, Dwarf_Addr start);
  std::vector<Frame> compute(uint64_t pc, bool activation);
  std::vector<Frame> compute_in(Dwfl_Module* mod, uint64_t pc, Dwarf_Addr a);
  const std::string& file_key(Dwfl_Module* mod, std::string_view name, Dwarf_Addr start);

  // The compile unit that holds `a`, and the bias of its addresses.
  struct CuAt {
    Dwarf_Die die;
    Dwarf_Addr bias;
    bool by_ranges;  // found through CuIndex (no .debug_aranges), not libdwfl's lookup
  };
  std::optional<CuAt> find_cu(Dwfl_Module* mod, std::string_view name, Dwarf_Addr start,
                              Dwarf_Addr a);
  // From the innermost function DIE `fn` out to its subprogram: an inlined frame per inlined
  // subroutine (pos moves to each call site), then the physical frame's function name.
  void walk_inline_chain(Dwarf_Die* fn, const std::optional<ElfSymbol>& sym, Frame& phys,
                         SourcePos& pos, std::vector<Frame>& frames) const;
};

Symbolizer::Symbolizer(TargetDwfl& dwfl, SymbolizeOptions opts,
                       std::shared_ptr<SharedFrames> shared)
    : impl_(std::make_unique<Impl>(Impl{dwfl, opts, std::move(shared), {}, {}, {}, {}})) {}

Symbolizer::~Symbolizer() = default;

const std::vector<Frame>& Symbolizer::symbolize(uint64_t pc, bool activation) {
  Key key{pc, activation};
  auto it = impl_->cache.find(key);
  if (it == impl_->cache.end()) {
    it = impl_->cache.emplace(key, impl_->compute(pc, activation)).first;
  }
  return it->second;
}

const ModuleNames& Symbolizer::Impl::module_names(Dwfl_Module* mod, std::string_view name,
                                                  Dwarf_Addr start) {
  std::string key = std::string(name) + '\0' + std::to_string(start);
  auto it = names.find(key);
  if (it == names.end()) {
    it = names.emplace(std::move(key), std::make_unique<ModuleNames>(mod)).first;
  }
  return *it->second;
}

const CuIndex& Symbolizer::Impl::cu_index(Dwfl_Module* mod, std::string_view name,
                                          Dwarf_Addr start) {
  std::string key = std::string(name) + '\0' + std::to_string(start);
  auto it = cu_indexes.find(key);
  if (it == cu_indexes.end()) {
    it = cu_indexes.emplace(std::move(key), std::make_unique<CuIndex>(mod)).first;
  }
  return *it->second;
}

std::optional<Symbolizer::Impl::CuAt> Symbolizer::Impl::find_cu(Dwfl_Module* mod,
                                                                std::string_view name,
                                                                Dwarf_Addr start, Dwarf_Addr a) {
  // With neither inline frames nor source lines wanted, the ELF symbol table says all
  // there is to say: do not load the module's DWARF at all (eu-stack's plain mode).
  if (!opts.inline_frames && !opts.source) {
    return std::nullopt;
  }
  Dwarf_Addr dwbias = 0;
  if (Dwarf_Die* cu = dwfl_module_addrdie(mod, a, &dwbias); cu != nullptr) {
    return CuAt{*cu, dwbias, false};
  }
  // No .debug_aranges (Go): find the CU by its own ranges.
  const CuIndex& index = cu_index(mod, name, start);
  if (a >= index.bias()) {
    if (auto found = index.find(mod, a - index.bias())) {
      return CuAt{*found, index.bias(), true};
    }
  }
  return std::nullopt;
}

void Symbolizer::Impl::walk_inline_chain(Dwarf_Die* fn, const std::optional<ElfSymbol>& sym,
                                         Frame& phys, SourcePos& pos,
                                         std::vector<Frame>& frames) const {
  // dwarf_getscopes follows the abstract origin past an inlined subroutine, to the
  // abstract definition's parents. The concrete chain (inlined -> ... -> the function
  // it was inlined into) comes from dwarf_getscopes_die on the innermost concrete DIE.
  Dwarf_Die* chain = nullptr;
  const int m = dwarf_getscopes_die(fn, &chain);
  for (int j = 0; j < m; ++j) {
    Dwarf_Die* die = &chain[j];
    const int tag = dwarf_tag(die);
    if (tag == DW_TAG_inlined_subroutine) {
      if (opts.inline_frames) {
        Frame f;
        f.pc = phys.pc;
        f.module = phys.module;
        f.offset = phys.offset;
        f.function = die_function_name(die);
        f.file = pos.file;
        f.line = pos.line;
        f.inlined = true;
        frames.push_back(std::move(f));
      }
      if (opts.source) {
        pos = call_site(die);  // the caller's position is where this call was made
      }
    } else if (tag == DW_TAG_subprogram || tag == DW_TAG_entry_point) {
      phys.function = subprogram_name(die, sym);
      break;
    }
  }
  std::free(chain);
}

// The frames at pc: from the shared frames of its file when another image computed them.
std::vector<Frame> Symbolizer::Impl::compute(uint64_t pc, bool activation) {
  // A caller's pc is a return address: the call is the instruction before it, and the
  // return address itself can belong to the next line or even the next function
  // (docs/DESIGN.md "libdwfl" c.1).
  const Dwarf_Addr a = activation || pc == 0 ? pc : pc - 1;
  Dwfl_Module* mod = dwfl_addrmodule(target.get(), a);
  if (mod == nullptr) {
    return unknown_module_frame(pc);
  }
  if (!shared) {
    return compute_in(mod, pc, a);
  }
  Dwarf_Addr start = 0;
  const char* modname =
      dwfl_module_info(mod, nullptr, &start, nullptr, nullptr, nullptr, nullptr, nullptr);
  std::string_view name = modname != nullptr ? modname : "";
  const std::string& file = file_key(mod, name, start);
  Dwarf_Addr bias = 0;
  if (file.empty() || dwfl_module_getelf(mod, &bias) == nullptr || pc < bias) {
    return compute_in(mod, pc, a);
  }
  // The file's frames at this ELF address (the same in every image that maps the file);
  // pc and module path are this image's.
  std::string key = file;
  key += std::to_string(pc - bias);
  key += activation ? 'a' : 'r';
  std::vector<Frame> frames;
  if (auto it = shared->frames_.find(key); it != shared->frames_.end()) {
    ++shared->hits_;
    frames = it->second;
  } else {
    ++shared->misses_;
    frames = compute_in(mod, pc, a);
    shared->frames_.emplace(std::move(key), frames);
  }
  const std::string module = module_path(name);
  for (Frame& f : frames) {
    f.pc = pc;
    f.module = module;
  }
  return frames;
}

// "b:<build-id hex>:" for a module with a build-id, else "" (not shared: two files at one
// path in two images may differ).
const std::string& Symbolizer::Impl::file_key(Dwfl_Module* mod, std::string_view name,
                                              Dwarf_Addr start) {
  std::string key = std::string(name) + '\0' + std::to_string(start);
  auto it = file_keys.find(key);
  if (it != file_keys.end()) {
    return it->second;
  }
  const std::string id = module_build_id(mod);
  std::string file = id.empty() ? std::string() : "b:" + id + ':';
  return file_keys.emplace(std::move(key), std::move(file)).first->second;
}

// Phases: the module and offset; a PLT entry (done); the ELF symbol and function start;
// file:line; the CU, then the inline chain from the innermost function to its subprogram.
std::vector<Frame> Symbolizer::Impl::compute_in(Dwfl_Module* mod, uint64_t pc, Dwarf_Addr a) {
  Frame phys;
  phys.pc = pc;
  Dwarf_Addr start = 0;
  const char* modname =
      dwfl_module_info(mod, nullptr, &start, nullptr, nullptr, nullptr, nullptr, nullptr);
  std::string_view name = modname != nullptr ? modname : "";
  phys.module = module_path(name);
  Dwarf_Addr bias = 0;
  if (dwfl_module_getelf(mod, &bias) == nullptr) {
    bias = start;  // no ELF at all: the best offset there is is from the module's start
  }
  phys.offset = pc - bias;
  const ModuleNames& elf_names = module_names(mod, name, start);

  // A PLT entry has neither a symbol nor DWARF: the relocation it jumps through names it.
  if (const NamedRange* plt = elf_names.plt_entry(a - bias); plt != nullptr) {
    phys.function = plt->name;
    phys.function_start = plt->start;
    return {std::move(phys)};
  }
  const std::optional<ElfSymbol> sym = elf_symbol(mod, elf_names, a);
  phys.function_start = function_start(mod, elf_names, a, bias, sym);

  SourcePos pos = opts.source ? line_of(mod, a) : SourcePos{};
  std::vector<Frame> frames;
  if (std::optional<CuAt> cu = find_cu(mod, name, start, a)) {
    if (cu->by_ranges && opts.source && !pos.line) {
      pos = line_in_cu(&cu->die, a - cu->bias);
    }
    if (std::optional<Dwarf_Die> fn = innermost_function(&cu->die, a - cu->bias)) {
      walk_inline_chain(&*fn, sym, phys, pos, frames);
    }
  }
  if (!phys.function && sym) {
    phys.function = sym->name;
  }
  phys.file = std::move(pos.file);
  phys.line = pos.line;
  frames.push_back(std::move(phys));
  return frames;
}

}  // namespace profctl
