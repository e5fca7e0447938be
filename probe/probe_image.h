// SPDX-License-Identifier: MIT
// The probe image builder: a pure function from (where the areas are in the target, which
// functions to probe) to (the bytes of the code area, and per site the exact patch to
// write, or the int3 fallback, or a refusal with the reason). It writes nothing anywhere:
// attach/ writes the bytes while the world is stopped and journals them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "probe/relocator.h"

namespace profctl::probe {

// One function to probe.
struct ProbeSite {
  std::string name;    // for messages only ("malloc")
  uint32_t kind = 0;   // PROBE_KIND_* (probe/abi/probe_abi.h)
  FunctionCode code;   // its entry address in the target and its bytes read from the target
  uint32_t flags = 0;  // PROBE_SITE_*: what the blob may assume of this function
};

enum class PatchMethod {
  Jump,     // write new_bytes (jmp rel32 to the site's stub) at patch_address
  Int3,     // write 0xCC at patch_address; on SIGTRAP with rip == patch_address + 1 set rip
            // to trampoline_entry (the stack is as at the function's entry)
  Alias,    // same address as an earlier site (e.g. aligned_alloc == memalign in glibc):
            // already probed by that site, nothing to write
  Refused,  // nothing to write; `reason` says why
};

struct SitePatch {
  PatchMethod method = PatchMethod::Refused;
  uint32_t site_index = 0;     // record.site and the stub index (Alias: the earlier site's)
  uint64_t function = 0;       // the function's entry (record.rip)
  uint64_t patch_address = 0;  // the entry, or entry + 4 after an endbr64
  std::vector<uint8_t> original_bytes;  // the bytes now at patch_address (check, restore)
  std::vector<uint8_t> new_bytes;       // the bytes to write there
  uint64_t trampoline_entry = 0;        // the site's entry stub (target address)
  uint64_t original_path = 0;           // its relocated original path (target address)
  uint64_t resume_address = 0;          // where the original path rejoins the function
  std::string reason;                   // Refused: why; Int3: why not a jump
};

struct ProbeImage {
  uint64_t code_address = 0;
  uint64_t shared_address = 0;
  std::vector<uint8_t> code;     // write at code_address; [code_address, process_token) r-x
  std::vector<SitePatch> sites;  // one per input site, same order
  // The last page of the code area (target address): stays rw. Mark it MADV_WIPEONFORK
  // and, only if that succeeded, write the owner pid as a u64 here: the record path then
  // needs no getpid() (a forked child reads 0 and asks the kernel). Left 0, it still works.
  uint64_t process_token = 0;
};

// Bytes of relocated code reserved per site in the code area (instructions + jump back).
inline constexpr size_t kOriginalPathReserve = 128;

// Bytes to map for the code area of `site_count` sites (a page multiple, the process token
// page included).
size_t code_area_size(size_t site_count);

// Builds the image for a code area at `code_address` (`code_capacity` bytes mapped) and a
// shared area at `shared_address`, both target addresses. Fails only when the blob or
// the area is unusable; a site that cannot be patched is a Refused entry, not an error.
Result<ProbeImage> build_probe_image(uint64_t code_address, size_t code_capacity,
                                     uint64_t shared_address, std::span<const ProbeSite> sites);

const char* patch_method_name(PatchMethod m);

}  // namespace profctl::probe
