// SPDX-License-Identifier: MIT
#include "probe/installer.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "base/log.h"
#include "base/text_fields.h"
#include "probe/abi/probe_abi.h"
#include "probe/blob_image.h"
#include "probe/code_area.h"
#include "probe/target_memfd.h"

namespace profctl::probe {
namespace {

constexpr long kMapFixedNoReplace = 0x100000;  // MAP_FIXED_NOREPLACE (Linux 4.17)
constexpr long kMadvWipeOnFork = 18;           // MADV_WIPEONFORK (Linux 4.14)
constexpr uint64_t kPage = 4096;

// A remote syscall's raw result as a Result: -4095..-1 are errnos.
Result<uint64_t> checked(Result<long> r, const std::string& what) {
  if (!r) {
    return r.error();
  }
  if (*r < 0 && *r > -4096) {
    return Error{what + " in the target", static_cast<int>(-*r)};
  }
  return static_cast<uint64_t>(*r);
}

// True when [address, address + size) in pid is a mapping of the file open at `fd`.
bool maps_our_memfd(pid_t pid, uint64_t address, uint64_t size, int fd) {
  struct stat ours {};
  struct stat theirs {};
  const uint64_t end = address + size;
  char path[96];
  std::snprintf(path, sizeof path, "/proc/%d/map_files/%llx-%llx", pid,
                static_cast<unsigned long long>(address), static_cast<unsigned long long>(end));
  return fstat(fd, &ours) == 0 && stat(path, &theirs) == 0 && ours.st_dev == theirs.st_dev &&
         ours.st_ino == theirs.st_ino;
}

}  // namespace

Result<MappedArea> Installer::map_code_area(const std::string& module,
                                            const std::vector<MapEntry>& maps, size_t size) {
  auto range = module_range(maps, module);
  if (!range) {
    return Error{"module " + module + " is not mapped"};
  }
  // The areas this install mapped already are not in `maps` (read before them): two
  // modules close together (a preloaded allocator next to libc) would get the same gap.
  std::vector<MapEntry> taken = maps;
  for (const MappedArea& a : into_.code_areas) {
    MapEntry e;
    e.start = a.address;
    e.end = a.address + a.size;
    taken.push_back(e);
  }
  std::sort(taken.begin(), taken.end(),
            [](const MapEntry& a, const MapEntry& b) { return a.start < b.start; });
  auto where = find_code_area(taken, range->first, range->second, size);
  if (!where) {
    return Error{"no free address range within reach of " + module};
  }
  return map_code_area_at(module, *where, size);
}

Result<MappedArea> Installer::map_code_area_at(const std::string& module, uint64_t where,
                                               size_t size) {
  auto addr = checked(target_.syscall(SYS_mmap, {where, size, PROT_READ | PROT_WRITE,
                                                 MAP_PRIVATE | MAP_ANONYMOUS | kMapFixedNoReplace,
                                                 static_cast<uint64_t>(-1), 0}),
                      "mmap of the probe code area");
  if (!addr) {
    return addr.error();
  }
  // Recorded before the check below, so that removal unmaps it wherever it landed.
  const MappedArea code{*addr, size};
  into_.code_areas.push_back(code);
  probe_blob_header header{};
  std::memcpy(&header, blob_image().data(), sizeof header);
  into_.wait_returns.push_back(*addr + header.wait_return_offset);
  if (*addr != where) {
    return Error{"the kernel placed the probe code area away from " + module};
  }
  return code;
}

Result<void> Installer::map_shared_area(const SharedAreaOptions& options) {
  if (into_.code_areas.empty()) {
    return Error{"the shared area's name needs a code area to be written to"};
  }
  // The memfd's name must be in target memory: it borrows the first code area (rw, and
  // overwritten by the image later).
  return map_shared_area_with(options, into_.code_areas.front().address, 0);
}

Result<void> Installer::map_shared_area_at(const SharedAreaOptions& options, uint64_t name_at,
                                           uint64_t at) {
  return map_shared_area_with(options, name_at, at);
}

Result<void> Installer::map_shared_area_with(const SharedAreaOptions& options, uint64_t name_at,
                                             uint64_t at) {
  const std::string name = random_memfd_name();
  if (auto r = target_.write(name_at, std::as_bytes(std::span(name.c_str(), name.size() + 1)));
      !r) {
    return r.error();
  }
  auto tfd = checked(target_.syscall(SYS_memfd_create, {name_at, MFD_CLOEXEC | MFD_ALLOW_SEALING}),
                     "memfd_create");
  if (!tfd) {
    return tfd.error();
  }
  auto close_tfd = [&] { (void)target_.syscall(SYS_close, {*tfd}); };
  auto area = open_target_shared_area(target_.pid(), static_cast<int>(*tfd), name, options);
  if (!area) {
    close_tfd();
    return area.error();
  }
  into_.area = std::move(*area);
  // MAP_POPULATE: the target's first record must not fault in ring pages.
  const uint64_t flags =
      MAP_SHARED | (options.prefault ? MAP_POPULATE : 0) | (at != 0 ? MAP_FIXED : 0);
  auto shared = checked(
      target_.syscall(SYS_mmap, {at, into_.area.size(), PROT_READ | PROT_WRITE, flags, *tfd, 0}),
      "mmap of the probe shared area");
  close_tfd();
  if (!shared) {
    return shared.error();
  }
  if (at != 0 && *shared != at) {
    return Error{"the probe shared area was not mapped where asked"};
  }
  into_.shared = {*shared, into_.area.size()};
  // The descriptor the target mapped is a number in a table another process may share
  // (clone(CLONE_FILES)) and swap: the mapping must be our memfd, or the probes would
  // write into whatever the target chose (its own file: no harm to profctl, no records).
  if (!maps_our_memfd(target_.pid(), into_.shared.address, into_.shared.size, into_.area.fd())) {
    return Error{"the target mapped another file than profctl's memfd: probes refused"};
  }
  return {};
}

Result<std::vector<std::vector<uint8_t>>> Installer::read_functions(
    const std::vector<FoundSite>& sites) {
  std::vector<std::vector<uint8_t>> bytes(sites.size());
  for (size_t i = 0; i < sites.size(); ++i) {
    const size_t want =
        sites[i].size > 0 ? std::min<uint64_t>(sites[i].size, 1 << 16) : kUnknownSizeScanWindow;
    bytes[i].resize(want);
    auto n = target_.read(sites[i].address, std::as_writable_bytes(std::span(bytes[i])));
    if (!n) {
      return n.error();
    }
    bytes[i].resize(*n);
  }
  return bytes;
}

Result<void> Installer::protect_code(const MappedArea& code, const ProbeImage& image) {
  auto prot = checked(
      target_.syscall(SYS_mprotect,
                      {code.address, image.process_token - code.address, PROT_READ | PROT_EXEC}),
      "mprotect of the probe code area");
  if (!prot) {
    return prot.error();
  }
  return {};
}

void Installer::write_process_token(const ProbeImage& image) {
  // The owner's pid, wiped to 0 in a forked child (so the record path needs no getpid).
  // Only if the kernel can wipe it.
  if (auto wipe = target_.syscall(SYS_madvise, {image.process_token, kPage, kMadvWipeOnFork});
      wipe && *wipe == 0) {
    const auto owner = static_cast<uint64_t>(target_.pid());
    if (target_.write(image.process_token, std::as_bytes(std::span(&owner, 1)))) {
      into_.tokens.push_back(image.process_token);
    }
  }
}

void Installer::write_tokens(const std::vector<uint64_t>& tokens) {
  const auto owner = static_cast<uint64_t>(target_.pid());
  for (uint64_t at : tokens) {
    if (target_.write(at, std::as_bytes(std::span(&owner, 1)))) {
      into_.tokens.push_back(at);
    }
  }
}

Result<ProbeImage> Installer::write_code_area(const MappedArea& code,
                                              const std::vector<FoundSite>& sites) {
  auto bytes = read_functions(sites);
  if (!bytes) {
    return bytes.error();
  }
  std::vector<ProbeSite> probe_sites;
  for (size_t i = 0; i < sites.size(); ++i) {
    ProbeSite site;
    site.name = sites[i].name;
    site.kind = sites[i].kind;
    site.flags = sites[i].flags;
    site.code = FunctionCode{sites[i].address, (*bytes)[i], sites[i].size};
    probe_sites.push_back(site);
  }
  auto image = build_probe_image(code.address, code.size, into_.shared.address, probe_sites);
  if (!image) {
    return image.error();
  }
  if (auto r = target_.write(code.address, std::as_bytes(std::span(image->code))); !r) {
    return r.error();
  }
  if (auto r = protect_code(code, *image); !r) {
    return r.error();
  }
  write_process_token(*image);
  return image;
}

std::optional<std::string> Installer::patch_refusal(const SitePatch& sp,
                                                    const std::vector<uint64_t>& pcs,
                                                    bool allow_breakpoints) {
  if (sp.method == PatchMethod::Int3 && !allow_breakpoints) {
    return "no jump fits (" + sp.reason +
           ") and a breakpoint would kill the process if profctl died";
  }
  // No thread may be stopped inside the bytes being replaced.
  const uint64_t lo = sp.patch_address;
  const uint64_t hi = lo + sp.new_bytes.size();
  if (std::any_of(pcs.begin(), pcs.end(), [&](uint64_t pc) { return pc > lo && pc < hi; })) {
    return "a thread was stopped inside its first bytes";
  }
  std::vector<uint8_t> now(sp.original_bytes.size());
  auto n = target_.read(lo, std::as_writable_bytes(std::span(now)));
  if (!n || *n != now.size() || now != sp.original_bytes) {
    return "its bytes changed while installing";
  }
  return std::nullopt;
}

std::optional<std::string> Installer::site_refusal(const SitePatch& sp,
                                                   const std::vector<uint64_t>& pcs,
                                                   bool allow_breakpoints) {
  if (sp.method == PatchMethod::Refused) {
    return sp.reason;
  }
  if (sp.method == PatchMethod::Alias) {
    return std::nullopt;
  }
  return patch_refusal(sp, pcs, allow_breakpoints);
}

void Installer::journal_patches(const std::string& module, const std::vector<FoundSite>& sites,
                                const ProbeImage& image, const std::vector<uint64_t>& pcs,
                                bool allow_breakpoints,
                                const std::function<bool(const FoundSite&)>& skip) {
  for (size_t i = 0; i < image.sites.size(); ++i) {
    const SitePatch& sp = image.sites[i];
    if (skip && skip(sites[i])) {
      continue;
    }
    const std::string what = sites[i].name + " (" + module + ")";
    if (sp.method == PatchMethod::Refused) {
      into_.notes.push_back(what + " not probed: " + sp.reason);
      continue;
    }
    if (sp.method == PatchMethod::Alias) {
      ++into_.probed;
      continue;
    }
    if (auto why = patch_refusal(sp, pcs, allow_breakpoints)) {
      into_.notes.push_back(what + " not probed: " + *why);
      continue;
    }
    into_.patches.push_back(
        Patch{sp.patch_address, sp.original_bytes, sp.new_bytes, sp.method, sp.trampoline_entry});
    ++into_.probed;
    if (sp.method == PatchMethod::Int3) {
      into_.notes.push_back(what + " probed with a breakpoint (each call traps): " + sp.reason);
    }
    logger("probe")->debug("probe {} at {}: {} (site {}, stub {}, original path {}, code {})", what,
                           hex(sp.patch_address), patch_method_name(sp.method), sp.site_index,
                           hex(sp.trampoline_entry), hex(sp.original_path),
                           hex(image.code_address));
  }
}

Result<void> Installer::write_patches() {
  for (const Patch& p : into_.patches) {
    if (auto r = target_.write(p.address, std::as_bytes(std::span(p.patched))); !r) {
      return r.error();
    }
  }
  return {};
}

bool Installer::restore_patches() {
  bool all = true;
  for (Patch& p : into_.patches) {
    if (p.restored) {
      continue;
    }
    std::vector<uint8_t> now(p.original.size());
    if (auto r = target_.write(p.address, std::as_bytes(std::span(p.original))); !r) {
      logger("probe")->warn("restoring {} bytes at {}: {}", p.original.size(), hex(p.address),
                            r.error().message());
    } else if (auto n = target_.read(p.address, std::as_writable_bytes(std::span(now)));
               n && *n == now.size() && now == p.original) {
      p.restored = true;  // read back: the target's bytes are the file's again
    }
    all = all && p.restored;
  }
  return all;
}

void Installer::unmap_areas() {
  std::vector<MappedArea*> areas;
  for (MappedArea& a : into_.code_areas) {
    areas.push_back(&a);
  }
  if (into_.shared.address != 0) {
    areas.push_back(&into_.shared);
  }
  for (MappedArea* a : areas) {
    if (a->unmapped) {
      continue;
    }
    auto r = target_.syscall(SYS_munmap, {a->address, a->size});
    if (r && *r == 0) {
      a->unmapped = true;
    } else {
      logger("probe")->warn("unmapping the probe area at {} ({} bytes): {}", hex(a->address),
                            a->size,
                            r ? std::strerror(static_cast<int>(-*r)) : r.error().message());
    }
  }
}

}  // namespace profctl::probe
