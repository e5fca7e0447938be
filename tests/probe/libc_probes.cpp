// SPDX-License-Identifier: MIT
#include "tests/probe/libc_probes.h"

#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "attach/proc.h"
#include "base/fd.h"
#include "probe/abi/probe_abi.h"
#include "probe/code_area.h"
#include "probe/elf_symbols.h"

namespace profctl::probe::testing {
namespace {

constexpr uint64_t kPage = 4096;

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

Result<void> write_text(uint64_t address, const std::vector<uint8_t>& bytes) {
  uint64_t lo = address / kPage * kPage;
  uint64_t hi = (address + bytes.size() + kPage - 1) / kPage * kPage;
  void* page = reinterpret_cast<void*>(lo);
  // Stays executable throughout: memcpy itself runs from libc's text.
  if (mprotect(page, hi - lo, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) {
    return errno_error("mprotect rwx libc text");
  }
  std::memcpy(reinterpret_cast<void*>(address), bytes.data(), bytes.size());
  if (mprotect(page, hi - lo, PROT_READ | PROT_EXEC) != 0) {
    return errno_error("mprotect r-x libc text");
  }
  return {};
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

Result<std::unique_ptr<LibcProbes>> LibcProbes::install(const std::vector<LibcSite>& sites,
                                                        const SharedAreaOptions& options,
                                                        bool far_code_area) {
  auto maps_text = read_file("/proc/self/maps");
  if (!maps_text) {
    return maps_text.error();
  }
  std::vector<MapEntry> maps = parse_maps(*maps_text);
  std::string libc;
  for (const MapEntry& m : maps) {
    if (m.path.ends_with("/libc.so.6")) {
      libc = m.path;
      break;
    }
  }
  if (libc.empty()) {
    return Error{"libc.so.6 is not mapped", 0};
  }
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
  auto area = SharedArea::create(options);
  if (!area) {
    return area.error();
  }
  std::unique_ptr<LibcProbes> p(new LibcProbes(std::move(*area)));
  p->libc_path_ = libc;

  // Maps read again for each attempt: the shared area (and anything else) may have taken
  // the gap; MAP_FIXED_NOREPLACE refuses rather than clobbers.
  p->code_size_ = code_area_size(sites.size());
  for (int attempt = 0; attempt < 8 && p->code_ == nullptr; ++attempt) {
    maps = parse_maps(read_file("/proc/self/maps").value());
    auto range = module_range(maps, libc);
    std::optional<uint64_t> where =
        far_code_area ? std::optional<uint64_t>(0x10000000 + attempt * 0x100000)
                      : find_code_area(maps, range->first, range->second, p->code_size_);
    if (!where) {
      return Error{"no room for the code area near libc", 0};
    }
    void* code = mmap(reinterpret_cast<void*>(*where), p->code_size_, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (code != MAP_FAILED) {
      p->code_ = code;
    } else if (errno != EEXIST) {
      return errno_error("mmap code area");
    }
  }
  if (p->code_ == nullptr) {
    return Error{"mmap code area: every candidate was taken", 0};
  }
  void* code = p->code_;

  std::vector<ProbeSite> probe_sites;
  for (const LibcSite& s : sites) {
    uint64_t address = s.address;
    uint64_t size = s.size;
    if (address == 0) {
      auto it = elf->functions.find(s.name);
      if (it == elf->functions.end() || it->second.ifunc || it->second.size == 0) {
        return Error{"libc has no plain sized function " + s.name, 0};
      }
      address = *bias + it->second.value;
      size = it->second.size;
    }
    p->addresses_[s.name] = address;
    // Our own text: readable in place.
    probe_sites.push_back(
        {s.name, s.kind,
         FunctionCode{address, {reinterpret_cast<const uint8_t*>(address), size}, size}, s.flags});
  }
  auto image = build_probe_image(reinterpret_cast<uint64_t>(code), p->code_size_,
                                 reinterpret_cast<uint64_t>(p->area_.data()), probe_sites);
  if (!image) {
    return image.error();
  }
  p->image_ = std::move(*image);
  std::memcpy(code, p->image_.code.data(), p->image_.code.size());
  uint64_t rx = p->image_.process_token - reinterpret_cast<uint64_t>(code);
  if (mprotect(code, rx, PROT_READ | PROT_EXEC) != 0) {
    return errno_error("mprotect code area r-x");
  }
  // The process token: our pid, on a page a forked child sees zeroed.
  auto* token = reinterpret_cast<uint64_t*>(p->image_.process_token);
  if (madvise(token, kPage, MADV_WIPEONFORK) == 0) {
    *token = static_cast<uint64_t>(getpid());
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
  p->patched_ = true;
  for (const SitePatch& s : p->image_.sites) {
    if (s.method != PatchMethod::Jump && s.method != PatchMethod::Int3) {
      continue;
    }
    if (std::memcmp(reinterpret_cast<const void*>(s.patch_address), s.original_bytes.data(),
                    s.original_bytes.size()) != 0) {
      return Error{"libc bytes changed under the patch at " + std::to_string(s.patch_address), 0};
    }
    if (auto w = write_text(s.patch_address, s.new_bytes); !w) {
      return w.error();
    }
  }
  return p;
}

void LibcProbes::remove() {
  if (!patched_) {
    return;
  }
  area_.set_enabled(false);
  for (const SitePatch& s : image_.sites) {
    if (s.method == PatchMethod::Jump || s.method == PatchMethod::Int3) {
      (void)write_text(s.patch_address, s.original_bytes);
    }
  }
  patched_ = false;
}

LibcProbes::~LibcProbes() {
  remove();
  if (g_int3_image == &image_) {
    signal(SIGTRAP, SIG_DFL);
    g_int3_image = nullptr;
  }
  // Single-threaded again and nobody inside a call-through: the code area can go.
  if (code_ != nullptr && area_.counters().inflight == 0) {
    munmap(code_, code_size_);
  }
}

}  // namespace profctl::probe::testing
