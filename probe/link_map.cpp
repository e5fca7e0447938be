// SPDX-License-Identifier: MIT
#include "probe/link_map.h"

#include <elf.h>

#include <cstring>
#include <set>

#include "base/fd.h"

namespace profctl::probe {
namespace {

constexpr size_t kMaxPhdrs = 256;
constexpr size_t kMaxDynamic = 4096;  // entries of the executable's dynamic section
// struct r_debug: int r_version; struct link_map* r_map; ElfW(Addr) r_brk; r_state; ...
constexpr uint64_t kRMapOffset = 8;
constexpr uint64_t kRStateOffset = 24;
// struct link_map: l_addr, l_name, l_ld, l_next, l_prev (the public prefix, <link.h>).
constexpr uint64_t kLdOffset = 16;
constexpr uint64_t kNextOffset = 24;

template <typename T>
Result<T> read_value(TargetMemory& target, uint64_t addr) {
  T v{};
  auto n = target.read(addr, std::as_writable_bytes(std::span(&v, 1)));
  if (!n) {
    return n.error();
  }
  if (*n != sizeof v) {
    return Error{"unmapped target memory at " + std::to_string(addr)};
  }
  return v;
}

// AT_PHDR and AT_PHNUM of the process: where its executable's program headers are.
Result<std::pair<uint64_t, uint64_t>> program_headers(pid_t pid) {
  auto auxv = read_auxv(pid, {AT_PHDR, AT_PHNUM});
  if (!auxv) {
    return auxv.error();
  }
  const uint64_t phdr = auxv->contains(AT_PHDR) ? auxv->at(AT_PHDR) : 0;
  const uint64_t phnum = auxv->contains(AT_PHNUM) ? auxv->at(AT_PHNUM) : 0;
  if (phdr == 0 || phnum == 0 || phnum > kMaxPhdrs) {
    return Error{"no usable AT_PHDR/AT_PHNUM in the auxiliary vector"};
  }
  return std::pair{phdr, phnum};
}

// The address of the executable's r_debug: its DT_DEBUG, which ld.so fills in.
Result<uint64_t> r_debug_address(TargetMemory& target) {
  auto ph = program_headers(target.pid());
  if (!ph) {
    return ph.error();
  }
  std::vector<Elf64_Phdr> phdrs(ph->second);
  auto n = target.read(ph->first, std::as_writable_bytes(std::span(phdrs)));
  if (!n || *n != phdrs.size() * sizeof(Elf64_Phdr)) {
    return Error{"the executable's program headers are not readable"};
  }
  const Elf64_Phdr* self = nullptr;
  const Elf64_Phdr* dynamic = nullptr;
  for (const Elf64_Phdr& p : phdrs) {
    if (p.p_type == PT_PHDR) {
      self = &p;
    } else if (p.p_type == PT_DYNAMIC) {
      dynamic = &p;
    }
  }
  if (dynamic == nullptr) {
    return Error{"the executable has no dynamic section (statically linked)"};
  }
  if (self == nullptr) {
    return Error{"the executable has no PT_PHDR: its load bias is unknown"};
  }
  const uint64_t bias = ph->first - self->p_vaddr;
  const uint64_t entries = std::min<uint64_t>(dynamic->p_memsz / sizeof(Elf64_Dyn), kMaxDynamic);
  std::vector<Elf64_Dyn> dyn(entries);
  auto m = target.read(bias + dynamic->p_vaddr, std::as_writable_bytes(std::span(dyn)));
  if (!m) {
    return m.error();
  }
  for (size_t i = 0; i < *m / sizeof(Elf64_Dyn) && dyn[i].d_tag != DT_NULL; ++i) {
    if (dyn[i].d_tag == DT_DEBUG) {
      if (dyn[i].d_un.d_ptr == 0) {
        break;
      }
      return dyn[i].d_un.d_ptr;
    }
  }
  return Error{"the executable's DT_DEBUG is not set (no dynamic linker ran yet)"};
}

}  // namespace

Result<int> link_map_state(TargetMemory& target) {
  auto r_debug = r_debug_address(target);
  if (!r_debug) {
    return r_debug.error();
  }
  auto map = read_value<uint64_t>(target, *r_debug + kRMapOffset);
  auto state = read_value<int32_t>(target, *r_debug + kRStateOffset);
  if (!map || !state) {
    return Error{"r_debug is not readable"};
  }
  if (*map == 0) {
    return Error{"the link map is empty"};
  }
  return *state;
}

Result<std::vector<std::string>> link_map_modules(TargetMemory& target,
                                                  const std::vector<MapEntry>& maps) {
  auto r_debug = r_debug_address(target);
  if (!r_debug) {
    return r_debug.error();
  }
  auto map = read_value<uint64_t>(target, *r_debug + kRMapOffset);
  if (!map) {
    return map.error();
  }
  std::vector<std::string> modules;
  std::set<std::string> seen;
  std::set<uint64_t> visited;  // a chain that loops (a hostile or half-updated target) ends
  for (uint64_t at = *map; at != 0 && visited.size() < kMaxLinkMapEntries;) {
    if (!visited.insert(at).second) {
      break;
    }
    auto ld = read_value<uint64_t>(target, at + kLdOffset);
    auto next = read_value<uint64_t>(target, at + kNextOffset);
    if (!ld || !next) {
      return Error{"the link map is not readable at " + std::to_string(at)};
    }
    // The vdso's entry has its dynamic section in an unnamed mapping: no file, skipped.
    const MapEntry* m = find_mapping(maps, *ld);
    if (m != nullptr && !m->path.empty() && m->path[0] == '/' && seen.insert(m->path).second) {
      modules.push_back(m->path);
    }
    at = *next;
  }
  if (modules.empty()) {
    return Error{"the link map names no mapped module"};
  }
  return modules;
}

std::vector<std::string> search_order(const std::vector<std::string>& link_map,
                                      const std::vector<MapEntry>& maps, const std::string& exe) {
  std::vector<std::string> modules = link_map;
  std::set<std::string> seen(link_map.begin(), link_map.end());
  if (link_map.empty() && !exe.empty()) {
    modules.push_back(exe);
    seen.insert(exe);
  }
  for (const MapEntry& m : maps) {
    if (!m.path.empty() && m.path[0] == '/' && seen.insert(m.path).second) {
      modules.push_back(m.path);
    }
  }
  return modules;
}

}  // namespace profctl::probe
