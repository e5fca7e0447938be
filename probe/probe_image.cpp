// SPDX-License-Identifier: MIT
#include "probe/probe_image.h"

#include <cstring>
#include <optional>

#include "probe/abi/probe_abi.h"
#include "probe/blob_image.h"

namespace profctl::probe {
namespace {

constexpr size_t kPage = 4096;

size_t align_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

Result<probe_blob_header> checked_header(std::span<const uint8_t> blob) {
  probe_blob_header h{};
  if (blob.size() < sizeof h) {
    return Error{"probe blob: smaller than its header", 0};
  }
  std::memcpy(&h, blob.data(), sizeof h);
  if (h.magic != PROBE_ABI_MAGIC || h.abi_version != PROBE_ABI_VERSION ||
      h.header_size != sizeof h || h.max_sites != PROBE_MAX_SITES || h.image_size != blob.size() ||
      h.stub_stride != PROBE_STUB_STRIDE ||
      h.stubs_offset + size_t{PROBE_MAX_SITES} * h.stub_stride > blob.size()) {
    return Error{"probe blob: header does not match probe_abi.h (stale build?)", 0};
  }
  return h;
}

// Kinds the blob has handlers for (a patch of any other would only cost the target time).
bool valid_kind(uint32_t kind) {
  return (kind >= PROBE_KIND_MALLOC && kind <= PROBE_KIND_FREE) || kind == PROBE_KIND_BLOCK ||
         kind == PROBE_KIND_MUTEX || kind == PROBE_KIND_MUTEX_WAKE || kind == PROBE_KIND_UNWIND;
}

// Flags the blob understands, and only on the kind they are about.
bool valid_flags(uint32_t kind, uint32_t flags) {
  const bool alloc = kind >= PROBE_KIND_MALLOC && kind < PROBE_KIND_FREE;
  const uint32_t allowed = kind == PROBE_KIND_UNWIND  ? PROBE_SITE_CANCEL_UNWIND
                           : kind == PROBE_KIND_BLOCK ? PROBE_SITE_CANCELLABLE_ARG6
                           : alloc                    ? PROBE_SITE_NESTS
                                                      : 0;
  return (flags & ~allowed) == 0;
}

void put_u64(std::vector<uint8_t>& code, size_t offset, uint64_t v) {
  std::memcpy(code.data() + offset, &v, sizeof v);
}

void put_u32(std::vector<uint8_t>& code, size_t offset, uint32_t v) {
  std::memcpy(code.data() + offset, &v, sizeof v);
}

}  // namespace

const char* patch_method_name(PatchMethod m) {
  switch (m) {
    case PatchMethod::Jump:
      return "jump";
    case PatchMethod::Int3:
      return "int3";
    case PatchMethod::Alias:
      return "alias";
    case PatchMethod::Refused:
      return "refused";
  }
  return "?";
}

size_t code_area_size(size_t site_count) {
  size_t code =
      align_up(align_up(blob_image().size(), 16) + site_count * kOriginalPathReserve, kPage);
  return code + kPage;  // + the process token page
}

namespace {

// Why `site` cannot have a handler in this blob; "" when it can.
std::string kind_refusal(const ProbeSite& site) {
  if (!valid_kind(site.kind)) {
    return "site kind " + std::to_string(site.kind) + " has no handler in this blob";
  }
  if (!valid_flags(site.kind, site.flags)) {
    return "site flags " + std::to_string(site.flags) + " do not apply to kind " +
           std::to_string(site.kind);
  }
  return "";
}

// The blob at code_address, aligned for the first original path, with the shared area's
// address and the process token's (the last page of the code area) filled in.
ProbeImage start_image(std::span<const uint8_t> blob, uint64_t code_address, size_t code_capacity,
                       uint64_t shared_address) {
  ProbeImage image;
  image.code_address = code_address;
  image.shared_address = shared_address;
  image.code.assign(blob.begin(), blob.end());
  image.code.resize(align_up(image.code.size(), 16), 0xCC);
  put_u64(image.code, PROBE_BLOB_SHARED_AREA_OFFSET, shared_address);
  image.process_token = code_address + code_capacity / kPage * kPage - kPage;
  put_u64(image.code, PROBE_BLOB_PROCESS_TOKEN_OFFSET, image.process_token);
  return image;
}

// An earlier, not refused site at the same address (glibc: aligned_alloc == memalign) as
// an Alias of it.
std::optional<SitePatch> alias_of_earlier(const ProbeImage& image, std::span<const ProbeSite> sites,
                                          size_t n) {
  for (size_t m = 0; m < n; ++m) {
    const SitePatch& earlier = image.sites[m];
    if (earlier.function == sites[n].code.address && earlier.method != PatchMethod::Refused) {
      SitePatch patch = earlier;
      patch.method = PatchMethod::Alias;
      patch.original_bytes.clear();
      patch.new_bytes.clear();
      patch.reason = sites[n].name + ": same address as " + sites[m].name;
      return patch;
    }
  }
  return std::nullopt;
}

// A site's entry relocated to its original path at `path`, with the jump back: a jmp
// (over the first >= 5 bytes) to `stub` when one fits, else an int3 (over the first
// instruction). Error.what is the refusal.
struct PlacedEntry {
  PatchMethod method = PatchMethod::Jump;
  Relocation reloc;
  std::vector<uint8_t> path_code;  // the relocated instructions and the jump back
  std::string int3_reason;         // Int3: why not a jump
};
Result<PlacedEntry> place_entry(const ProbeSite& site, uint64_t stub, uint64_t path) {
  PlacedEntry placed;
  auto reloc = relocate_entry(site.code, 5, path);
  std::string jump_refusal;
  if (reloc && !rel32_reaches(reloc->patch_address + 5, stub)) {
    jump_refusal = "the code area is out of jmp rel32 reach";
  } else if (!reloc) {
    jump_refusal = reloc.error().what;
  }
  if (!jump_refusal.empty() && site.kind == PROBE_KIND_UNWIND) {
    // Not worth a trap per throw; and the blob trusts only a jump on the cancellation
    // path (an int3 needs profctl alive).
    return Error{"no jump (" + jump_refusal + "), and an unwinder entry gets no int3", 0};
  }
  if (!jump_refusal.empty()) {
    reloc = relocate_entry(site.code, 1, path);
    if (!reloc) {
      return Error{"no jump (" + jump_refusal + "), no int3 (" + reloc.error().what + ")", 0};
    }
    placed.method = PatchMethod::Int3;
    placed.int3_reason = jump_refusal;
  }
  placed.path_code = reloc->code;
  std::vector<uint8_t> back = encode_jump(path + placed.path_code.size(), reloc->resume_address);
  placed.path_code.insert(placed.path_code.end(), back.begin(), back.end());
  if (placed.path_code.size() > kOriginalPathReserve) {
    return Error{"relocated entry needs " + std::to_string(placed.path_code.size()) + " bytes", 0};
  }
  placed.reloc = std::move(*reloc);
  return placed;
}

// The site's patch: the bytes now at its patch address (from the function's bytes) and
// the bytes to write there.
SitePatch patch_for(const ProbeSite& site, const PlacedEntry& placed, uint32_t index, uint64_t stub,
                    uint64_t path) {
  SitePatch patch;
  patch.function = site.code.address;
  patch.method = placed.method;
  if (placed.method == PatchMethod::Int3) {
    patch.reason = site.name + ": int3 fallback: " + placed.int3_reason;
  }
  const uint64_t at = placed.reloc.patch_address;
  const size_t off = at - site.code.address;
  const size_t len = placed.method == PatchMethod::Jump ? 5 : 1;
  patch.site_index = index;
  patch.patch_address = at;
  patch.original_bytes.assign(site.code.bytes.begin() + off, site.code.bytes.begin() + off + len);
  patch.new_bytes =
      placed.method == PatchMethod::Jump ? encode_jump(at, stub) : std::vector<uint8_t>{0xCC};
  patch.trampoline_entry = stub;
  patch.original_path = path;
  patch.resume_address = placed.reloc.resume_address;
  return patch;
}

// Appends the site's original path to the image and fills its slot of the blob's table.
void add_original_path(ProbeImage& image, const ProbeSite& site, const PlacedEntry& placed,
                       uint32_t index, uint64_t path) {
  image.code.insert(image.code.end(), placed.path_code.begin(), placed.path_code.end());
  image.code.resize(align_up(image.code.size(), 16), 0xCC);
  size_t slot = PROBE_BLOB_SITES_OFFSET + size_t{index} * PROBE_BLOB_SITE_SIZE;
  put_u64(image.code, slot + offsetof(probe_blob_site, original), path);
  put_u64(image.code, slot + offsetof(probe_blob_site, function), site.code.address);
  put_u32(image.code, slot + offsetof(probe_blob_site, kind), site.kind);
  put_u32(image.code, slot + offsetof(probe_blob_site, flags), site.flags);
}

}  // namespace

Result<ProbeImage> build_probe_image(uint64_t code_address, size_t code_capacity,
                                     uint64_t shared_address, std::span<const ProbeSite> sites) {
  std::span<const uint8_t> blob = blob_image();
  auto header = checked_header(blob);
  if (!header) {
    return header.error();
  }
  if (code_address % kPage != 0 || shared_address % kPage != 0 || shared_address == 0) {
    return Error{"probe image: code and shared areas must be page-aligned and non-null", 0};
  }
  if (code_capacity < code_area_size(sites.size())) {
    return Error{"probe image: code area of " + std::to_string(code_capacity) +
                     " bytes is too small for " + std::to_string(sites.size()) + " sites",
                 0};
  }
  ProbeImage image = start_image(blob, code_address, code_capacity, shared_address);
  uint32_t next_index = 0;
  for (size_t n = 0; n < sites.size(); ++n) {
    const ProbeSite& site = sites[n];
    auto refuse = [&](const std::string& why) {
      SitePatch patch;
      patch.function = site.code.address;
      patch.method = PatchMethod::Refused;
      patch.reason = site.name + ": " + why;
      image.sites.push_back(std::move(patch));
    };
    if (std::string why = kind_refusal(site); !why.empty()) {
      refuse(why);
      continue;
    }
    if (auto alias = alias_of_earlier(image, sites, n)) {
      image.sites.push_back(std::move(*alias));
      continue;
    }
    if (next_index >= PROBE_MAX_SITES) {
      refuse("more than " + std::to_string(PROBE_MAX_SITES) + " sites");
      continue;
    }
    const uint32_t index = next_index;
    const uint64_t stub =
        code_address + header->stubs_offset + uint64_t{index} * header->stub_stride;
    const uint64_t path = code_address + image.code.size();
    auto placed = place_entry(site, stub, path);
    if (!placed) {
      refuse(placed.error().what);
      continue;
    }
    image.sites.push_back(patch_for(site, *placed, index, stub, path));
    add_original_path(image, site, *placed, index, path);
    ++next_index;
  }
  if (code_address + image.code.size() > image.process_token) {
    return Error{
        "probe image: " + std::to_string(image.code.size()) + " bytes do not fit the code area", 0};
  }
  return image;
}

}  // namespace profctl::probe
