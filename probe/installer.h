// SPDX-License-Identifier: MIT
// The probe installer's phases: the steps of the install recipe (probe/README.md) that
// put something into the target, and the removal steps that take it out again. They
// reach the target only through TargetMemory (attach/target_memory.h): Probes runs them
// in a StoppedWorld, and tests/probe runs the very same phases on the test process's own
// libc through an in-process adapter.
//
// Finding what to probe, stopping threads and the thread hooks are Probes' (probes.h).
// Everything the phases put into the target is recorded in an Installation, so that a
// failure halfway and the detach both undo exactly that.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "attach/proc.h"
#include "attach/target_memory.h"
#include "base/result.h"
#include "probe/probe_image.h"
#include "probe/shared_area.h"

namespace profctl::probe {

// A function to probe, found in a module of the target.
struct FoundSite {
  std::string name;
  uint32_t kind = 0;     // PROBE_KIND_*
  uint64_t address = 0;  // its entry in the target
  uint64_t size = 0;     // the symbol's size; 0 = unknown
  uint32_t flags = 0;    // PROBE_SITE_*
};

// The sites to probe, by the module (path) holding them: one code area each.
using SitesByModule = std::map<std::string, std::vector<FoundSite>>;

// A range the install mapped into the target.
struct MappedArea {
  uint64_t address = 0;
  size_t size = 0;
  bool unmapped = false;
};

// One entry of the journal: a site's bytes as they were, and as patched.
struct Patch {
  uint64_t address = 0;
  std::vector<uint8_t> original;
  std::vector<uint8_t> patched;
  PatchMethod method = PatchMethod::Jump;
  uint64_t trampoline = 0;  // Int3: where a trap at address + 1 continues
  bool restored = false;    // the original bytes were written back and read back
};

// What the install put into the target.
struct Installation {
  SharedArea area;                     // profctl's mapping of the shared area
  MappedArea shared;                   // the target's mapping of it
  std::vector<MappedArea> code_areas;  // one per probed module
  std::vector<uint64_t> wait_returns;  // probe_wait_return in each code area
  std::vector<uint64_t> tokens;        // the process tokens written (wipe-on-fork pages)
  std::vector<Patch> patches;          // the journal: what write_patches writes
  std::vector<std::string> notes;      // lines for the report (sites not probed, and how)
  size_t probed = 0;                   // sites journaled or aliased
};

// Each phase changes the target through `target` and records what it did in `into`.
class Installer {
 public:
  Installer(TargetMemory& target, Installation& into) : target_(target), into_(into) {}

  // A code area of `size` bytes for `module` at the free range closest to it in `maps`
  // (within rel32 reach), mapped rw with MAP_FIXED_NOREPLACE: EEXIST when the target
  // mapped something there since `maps` was read.
  Result<MappedArea> map_code_area(const std::string& module, const std::vector<MapEntry>& maps,
                                   size_t size);
  // The same at a chosen address.
  Result<MappedArea> map_code_area_at(const std::string& module, uint64_t where, size_t size);

  // The shared area: a memfd the target creates under a random name (written into the
  // first code area), taken and proven by profctl (probe/target_memfd.h), mapped into the
  // target MAP_SHARED|MAP_POPULATE, and its descriptor closed there again.
  Result<void> map_shared_area(const SharedAreaOptions& options);
  // The same, the name written at `name_at` (writable target memory) and the area mapped
  // MAP_FIXED at `at`, replacing what is there: a forked child's own area where its
  // inherited code areas expect the shared one.
  Result<void> map_shared_area_at(const SharedAreaOptions& options, uint64_t name_at, uint64_t at);
  // The target's pid written at each process token (a forked child's pages read 0).
  void write_tokens(const std::vector<uint64_t>& tokens);

  // A module's image: its sites' bytes read from the target, the image built for `code`,
  // written there, made r-x up to the process token, and the token (the target's pid)
  // written when the kernel can wipe it in a forked child.
  Result<ProbeImage> write_code_area(const MappedArea& code, const std::vector<FoundSite>& sites);

  // Journals the image's patches (`module` names it in notes): a refused site, an int3
  // without `allow_breakpoints`, a site with a thread's pc (of `pcs`) inside its first
  // bytes, or whose bytes changed since they were read, gets a note instead.
  // Sites `skip` says yes to are left out without a note.
  void journal_patches(const std::string& module, const std::vector<FoundSite>& sites,
                       const ProbeImage& image, const std::vector<uint64_t>& pcs,
                       bool allow_breakpoints,
                       const std::function<bool(const FoundSite&)>& skip = {});

  // Why a site of an image cannot be patched now (the builder refused it, or
  // patch_refusal below), nullopt when it can (an alias can when its first site can).
  std::optional<std::string> site_refusal(const SitePatch& sp, const std::vector<uint64_t>& pcs,
                                          bool allow_breakpoints);

  // Writes every journaled patch (enable the area first: no call goes unrecorded once
  // patched).
  Result<void> write_patches();

  // Removal: writes every patch's original bytes back; true when all of them read back.
  bool restore_patches();
  // Removal: unmaps every area not unmapped yet (only once no thread can be inside one).
  void unmap_areas();

 private:
  Result<void> map_shared_area_with(const SharedAreaOptions& options, uint64_t name_at,
                                    uint64_t at);
  Result<std::vector<std::vector<uint8_t>>> read_functions(const std::vector<FoundSite>& sites);
  Result<void> protect_code(const MappedArea& code, const ProbeImage& image);
  void write_process_token(const ProbeImage& image);
  // A site's patch is safe to write now; else the note saying why not.
  std::optional<std::string> patch_refusal(const SitePatch& sp, const std::vector<uint64_t>& pcs,
                                           bool allow_breakpoints);

  TargetMemory& target_;
  Installation& into_;
};

}  // namespace profctl::probe
