// SPDX-License-Identifier: MIT
#include "tests/probe/libc_probes.h"

#include <signal.h>
#include <ucontext.h>

#include <cerrno>

#include "attach/proc.h"
#include "base/fd.h"
#include "probe/abi/probe_abi.h"
#include "probe/code_area.h"
#include "probe/elf_symbols.h"

namespace profctl::probe::testing {
namespace {

// The image whose int3 sites the SIGTRAP handler redirects (one installation at a time).
const ProbeImage* g_int3_image = nullptr;

void on_sigtrap(int, siginfo_t*, void* context) {
  auto* uc = static_cast<ucontext_t*>(context);
  auto rip = static_cast<uint64_t>(uc->uc_mcontext.gregs[REG_RIP]);
  if (g_int3_image != nullptr) {
    for (const SitePatch& s : g_int3_image->sites) {
      if (s.method == PatchMethod::Int3 && rip == s.patch_address + 1) {
        uc->uc_mcontext.gregs[REG_RIP] = static_cast<greg_t>(s.trampoline_entry);
        return;
      }
    }
  }
  signal(SIGTRAP, SIG_DFL);  // not ours: die as without the handler
}

// `sites` as the installer takes them: libc's by name, the others as given.
Result<std::vector<FoundSite>> resolve(const std::vector<LibcSite>& sites, const std::string& libc,
                                       const std::vector<MapEntry>& maps) {
  std::vector<std::string> names;
  for (const LibcSite& s : sites) {
    if (s.address == 0) {
      names.push_back(s.name);
    }
  }
  auto elf = read_elf_functions(libc, names);
  if (!elf) {
    return elf.error();
  }
  auto bias = load_bias(*elf, maps, libc);
  if (!bias) {
    return bias.error();
  }
  std::vector<FoundSite> found;
  for (const LibcSite& s : sites) {
    FoundSite f{s.name, s.kind, s.address, s.size, s.flags};
    if (f.address == 0) {
      auto it = elf->functions.find(s.name);
      if (it == elf->functions.end() || it->second.ifunc || it->second.size == 0) {
        return Error{"libc has no plain sized function " + s.name, 0};
      }
      f.address = *bias + it->second.value;
      f.size = it->second.size;
    }
    found.push_back(f);
  }
  return found;
}

}  // namespace

std::vector<LibcSite> all_allocation_sites() {
  return {{"malloc", PROBE_KIND_MALLOC},
          {"calloc", PROBE_KIND_CALLOC},
          {"realloc", PROBE_KIND_REALLOC},
          {"reallocarray", PROBE_KIND_REALLOCARRAY},
          {"posix_memalign", PROBE_KIND_POSIX_MEMALIGN},
          {"aligned_alloc", PROBE_KIND_ALIGNED_ALLOC},
          {"memalign", PROBE_KIND_MEMALIGN},
          {"valloc", PROBE_KIND_VALLOC},
          {"pvalloc", PROBE_KIND_PVALLOC},
          {"free", PROBE_KIND_FREE}};
}

// Unlike a stopped target, this process may map something into the gap between reading
// its maps and the mmap (the installer refuses with EEXIST then): maps read again for each
// attempt. far: out of rel32 reach of libc, which forces the int3 fallback.
Result<MappedArea> LibcProbes::map_code_area(Installer& installer, size_t size, bool far) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto code = far ? installer.map_code_area_at(libc_path_, 0x10000000 + attempt * 0x100000, size)
                    : installer.map_code_area(
                          libc_path_, parse_maps(read_file("/proc/self/maps").value()), size);
    if (code || code.error().err != EEXIST) {
      return code;
    }
  }
  return Error{"mmap code area: every candidate was taken", 0};
}

Result<std::unique_ptr<LibcProbes>> LibcProbes::install(const std::vector<LibcSite>& sites,
                                                        const SharedAreaOptions& options,
                                                        bool far_code_area) {
  auto maps_text = read_file("/proc/self/maps");
  if (!maps_text) {
    return maps_text.error();
  }
  const std::vector<MapEntry> maps = parse_maps(*maps_text);
  std::unique_ptr<LibcProbes> p(new LibcProbes());
  for (const MapEntry& m : maps) {
    if (m.path.ends_with("/libc.so.6")) {
      p->libc_path_ = m.path;
      break;
    }
  }
  if (p->libc_path_.empty()) {
    return Error{"libc.so.6 is not mapped", 0};
  }
  auto found = resolve(sites, p->libc_path_, maps);
  if (!found) {
    return found.error();
  }
  for (const FoundSite& f : *found) {
    p->addresses_[f.name] = f.address;
  }

  // The installer's phases, as Probes::install_in runs them.
  Installer installer(p->self_, p->installed_);
  auto code = p->map_code_area(installer, code_area_size(found->size()), far_code_area);
  if (!code) {
    return code.error();
  }
  if (auto r = installer.map_shared_area(options); !r) {
    return r.error();
  }
  auto image = installer.write_code_area(*code, *found);
  if (!image) {
    return image.error();
  }
  p->image_ = std::move(*image);
  // No thread is inside libc's entries: this one is here, the others are the test's.
  installer.journal_patches(p->libc_path_, *found, p->image_, {}, /*allow_breakpoints=*/true);
  size_t patchable = 0;
  for (const SitePatch& s : p->image_.sites) {
    patchable += s.method == PatchMethod::Jump || s.method == PatchMethod::Int3;
  }
  if (p->installed_.patches.size() != patchable) {
    std::string why = "not every site could be patched:";
    for (const std::string& n : p->installed_.notes) {
      why += " " + n + ";";
    }
    return Error{why, 0};
  }
  bool any_int3 = false;
  for (const SitePatch& s : p->image_.sites) {
    any_int3 |= s.method == PatchMethod::Int3;
  }
  if (any_int3) {
    g_int3_image = &p->image_;
    struct sigaction sa {};
    sa.sa_sigaction = on_sigtrap;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGTRAP, &sa, nullptr);
  }
  // Left disabled (Probes enables first): the tests enable the probes themselves.
  p->patched_ = true;
  if (auto r = installer.write_patches(); !r) {
    return r.error();
  }
  return p;
}

void LibcProbes::remove() {
  if (!patched_) {
    return;
  }
  installed_.area.set_enabled(false);
  (void)Installer(self_, installed_).restore_patches();
  patched_ = false;
}

LibcProbes::~LibcProbes() {
  remove();
  if (g_int3_image == &image_) {
    signal(SIGTRAP, SIG_DFL);
    g_int3_image = nullptr;
  }
  // Single-threaded again and nobody inside a call-through: the areas can go.
  if (installed_.area.data() == nullptr || installed_.area.counters().inflight == 0) {
    Installer(self_, installed_).unmap_areas();
  }
}

}  // namespace profctl::probe::testing
