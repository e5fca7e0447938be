// SPDX-License-Identifier: MIT
// The image builder on synthetic functions: what it writes where, and every decision
// (jump, int3 fallback, alias, refusal). Nothing is executed here.
#include <gtest/gtest.h>

#include <cstring>

#include "probe/abi/probe_abi.h"
#include "probe/blob_image.h"
#include "probe/code_area.h"
#include "probe/probe_image.h"

namespace profctl::probe {
namespace {

constexpr uint64_t kCode = 0x7f0000100000;
constexpr uint64_t kShared = 0x7f1000000000;

// push %r12; push %rbp; push %rbx; mov %rdi,%rbx; ... ret   (glibc malloc's prologue)
const std::vector<uint8_t> kMallocLike = {0x41, 0x54, 0x55, 0x53, 0x48, 0x89, 0xfb,
                                          0x90, 0x5b, 0x5d, 0x41, 0x5c, 0xc3};
const std::vector<uint8_t> kTiny = {0x31, 0xc0, 0xc3};  // xor %eax,%eax; ret

template <class T>
T read_at(const std::vector<uint8_t>& v, size_t off) {
  T x;
  std::memcpy(&x, v.data() + off, sizeof x);
  return x;
}

TEST(ProbeImage, BlobHeaderIsSane) {
  auto blob = blob_image();
  ASSERT_GE(blob.size(), sizeof(probe_blob_header));
  probe_blob_header h;
  std::memcpy(&h, blob.data(), sizeof h);
  EXPECT_EQ(h.magic, PROBE_ABI_MAGIC);
  EXPECT_EQ(h.abi_version, PROBE_ABI_VERSION);
  EXPECT_EQ(h.image_size, blob.size());
  EXPECT_EQ(h.stub_stride, PROBE_STUB_STRIDE);
  EXPECT_EQ(h.shared_area, 0u);
  // Every stub starts with endbr64.
  for (uint32_t i = 0; i < PROBE_MAX_SITES; ++i) {
    const uint8_t* stub = blob.data() + h.stubs_offset + i * h.stub_stride;
    EXPECT_EQ(std::memcmp(stub, "\xf3\x0f\x1e\xfa", 4), 0) << "stub " << i;
  }
}

TEST(ProbeImage, JumpPatchAliasRefusalAndInt3) {
  uint64_t f1 = kCode + 0x10000000;  // 256 MiB away: in reach
  uint64_t f2 = f1 + 0x100;
  std::vector<ProbeSite> sites = {
      {"malloc", PROBE_KIND_MALLOC, {f1, kMallocLike, kMallocLike.size()}},
      {"alias", PROBE_KIND_MEMALIGN, {f1, kMallocLike, kMallocLike.size()}},
      {"tiny", PROBE_KIND_FREE, {f2, kTiny, kTiny.size()}},
      {"badkind", 99, {f2 + 0x100, kMallocLike, kMallocLike.size()}},
  };
  auto image = build_probe_image(kCode, code_area_size(sites.size()), kShared, sites);
  ASSERT_TRUE(image) << image.error().what;
  ASSERT_EQ(image->sites.size(), 4u);
  probe_blob_header h;
  std::memcpy(&h, image->code.data(), sizeof h);
  EXPECT_EQ(h.shared_area, kShared);
  // The process token is the last page of the code area, outside the written bytes.
  EXPECT_EQ(image->process_token, kCode + code_area_size(sites.size()) - 4096);
  EXPECT_EQ(h.process_token, image->process_token);
  EXPECT_LE(kCode + image->code.size(), image->process_token);

  const SitePatch& m = image->sites[0];
  ASSERT_EQ(m.method, PatchMethod::Jump) << m.reason;
  EXPECT_EQ(m.site_index, 0u);
  EXPECT_EQ(m.patch_address, f1);
  EXPECT_EQ(m.original_bytes, std::vector<uint8_t>(kMallocLike.begin(), kMallocLike.begin() + 5));
  EXPECT_EQ(m.trampoline_entry, kCode + h.stubs_offset);
  ASSERT_EQ(m.new_bytes.size(), 5u);
  EXPECT_EQ(m.new_bytes[0], 0xe9);
  EXPECT_EQ(f1 + 5 + read_at<int32_t>(m.new_bytes, 1), m.trampoline_entry);
  EXPECT_EQ(m.resume_address, f1 + 7);
  EXPECT_EQ(h.sites[0].original, m.original_path);
  EXPECT_EQ(h.sites[0].function, f1);
  EXPECT_EQ(h.sites[0].kind, uint32_t{PROBE_KIND_MALLOC});
  // The original path: the 7 relocated bytes, then jmp back to f1 + 7.
  size_t path = m.original_path - kCode;
  EXPECT_EQ(std::memcmp(image->code.data() + path, kMallocLike.data(), 7), 0);
  EXPECT_EQ(image->code[path + 7], 0xe9);
  EXPECT_EQ(m.original_path + 12 + read_at<int32_t>(image->code, path + 8), f1 + 7);

  EXPECT_EQ(image->sites[1].method, PatchMethod::Alias);
  EXPECT_EQ(image->sites[1].site_index, 0u);
  EXPECT_TRUE(image->sites[1].new_bytes.empty());

  const SitePatch& t = image->sites[2];
  ASSERT_EQ(t.method, PatchMethod::Int3) << t.reason;
  EXPECT_EQ(t.site_index, 1u);
  EXPECT_EQ(t.new_bytes, std::vector<uint8_t>{0xcc});
  EXPECT_EQ(t.original_bytes, std::vector<uint8_t>{0x31});
  EXPECT_EQ(t.trampoline_entry, kCode + h.stubs_offset + PROBE_STUB_STRIDE);
  EXPECT_NE(t.reason.find("too short"), std::string::npos) << t.reason;

  EXPECT_EQ(image->sites[3].method, PatchMethod::Refused);
  EXPECT_NE(image->sites[3].reason.find("kind"), std::string::npos);
  // The wait kinds have handlers: patched like any other site; an unknown kind is refused.
  std::vector<ProbeSite> waits = {
      {"lock", PROBE_KIND_MUTEX, {f1, kMallocLike, kMallocLike.size()}},
      {"unknown", PROBE_KIND_LAST + 1, {f1 + 0x100, kMallocLike, kMallocLike.size()}}};
  auto r = build_probe_image(kCode, code_area_size(2), kShared, waits);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->sites[0].method, PatchMethod::Jump);
  EXPECT_EQ(r->sites[1].method, PatchMethod::Refused);
  EXPECT_LE(image->code.size(), code_area_size(sites.size()));
}

TEST(ProbeImage, SiteFlagsReachTheHeaderOnlyOnTheirKind) {
  const uint64_t f = kCode + 0x1000000;
  std::vector<ProbeSite> sites = {
      {"wait", PROBE_KIND_BLOCK, {f, kMallocLike, kMallocLike.size()}, PROBE_SITE_CANCELLABLE_ARG6},
      {"cancel",
       PROBE_KIND_UNWIND,
       {f + 0x100, kMallocLike, kMallocLike.size()},
       PROBE_SITE_CANCEL_UNWIND},
      {"throw", PROBE_KIND_UNWIND, {f + 0x200, kMallocLike, kMallocLike.size()}},
      // A flag the blob would misread on another kind: refused.
      {"lock",
       PROBE_KIND_MUTEX,
       {f + 0x300, kMallocLike, kMallocLike.size()},
       PROBE_SITE_CANCELLABLE_ARG6},
      {"odd", PROBE_KIND_UNWIND, {f + 0x400, kMallocLike, kMallocLike.size()}, 0x80}};
  auto image = build_probe_image(kCode, code_area_size(sites.size()), kShared, sites);
  ASSERT_TRUE(image);
  const std::vector<uint32_t> want_flags = {PROBE_SITE_CANCELLABLE_ARG6, PROBE_SITE_CANCEL_UNWIND,
                                            0};
  for (size_t i = 0; i < want_flags.size(); ++i) {
    const SitePatch& p = image->sites[i];
    ASSERT_EQ(p.method, PatchMethod::Jump) << p.reason;
    const size_t at = PROBE_BLOB_SITES_OFFSET + p.site_index * PROBE_BLOB_SITE_SIZE;
    EXPECT_EQ(read_at<uint32_t>(image->code, at + offsetof(probe_blob_site, kind)), sites[i].kind);
    EXPECT_EQ(read_at<uint32_t>(image->code, at + offsetof(probe_blob_site, flags)), want_flags[i]);
  }
  for (size_t i = 3; i < sites.size(); ++i) {
    EXPECT_EQ(image->sites[i].method, PatchMethod::Refused) << sites[i].name;
    EXPECT_NE(image->sites[i].reason.find("flags"), std::string::npos) << image->sites[i].reason;
  }
}

TEST(ProbeImage, OutOfReachFallsBackToInt3) {
  uint64_t far = kCode + 0x300000000;  // 12 GiB
  std::vector<ProbeSite> sites = {{"m", PROBE_KIND_MALLOC, {far, kMallocLike, 0}}};
  auto image = build_probe_image(kCode, code_area_size(1), kShared, sites);
  ASSERT_TRUE(image);
  ASSERT_EQ(image->sites[0].method, PatchMethod::Int3);
  EXPECT_NE(image->sites[0].reason.find("reach"), std::string::npos) << image->sites[0].reason;
  // The jump back from the far code area is absolute.
  size_t path = image->sites[0].original_path - kCode;
  EXPECT_EQ(image->code[path + 2], 0xff);
  EXPECT_EQ(image->code[path + 3], 0x25);
  EXPECT_EQ(read_at<uint64_t>(image->code, path + 8), far + 2);
}

TEST(ProbeImage, AnUnwinderEntryOutOfReachIsRefusedNotTrapped) {
  uint64_t far = kCode + 0x300000000;  // 12 GiB
  std::vector<ProbeSite> sites = {
      {"_Unwind_RaiseException", PROBE_KIND_UNWIND, {far, kMallocLike, 0}}};
  auto image = build_probe_image(kCode, code_area_size(1), kShared, sites);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->sites[0].method, PatchMethod::Refused);
  EXPECT_NE(image->sites[0].reason.find("reach"), std::string::npos) << image->sites[0].reason;
}

TEST(ProbeImage, NothingPatchableIsRefusedWithBothReasons) {
  const std::vector<uint8_t> trap = {0xcc, 0x90, 0x90, 0x90, 0x90, 0xc3};
  std::vector<ProbeSite> sites = {{"t", PROBE_KIND_MALLOC, {kCode + 0x1000000, trap, 0}}};
  auto image = build_probe_image(kCode, code_area_size(1), kShared, sites);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->sites[0].method, PatchMethod::Refused);
  EXPECT_NE(image->sites[0].reason.find("no int3"), std::string::npos) << image->sites[0].reason;
}

TEST(ProbeImage, BadAreasAreErrors) {
  std::vector<ProbeSite> none;
  EXPECT_FALSE(build_probe_image(kCode + 1, code_area_size(0), kShared, none));
  EXPECT_FALSE(build_probe_image(kCode, code_area_size(0), 0, none));
  EXPECT_FALSE(
      build_probe_image(kCode, 4096, kShared, std::vector<ProbeSite>(40, ProbeSite{"x", 1, {}})));
}

TEST(ProbeImage, MoreThanMaxSitesAreRefused) {
  std::vector<ProbeSite> sites;
  for (int i = 0; i < PROBE_MAX_SITES + 2; ++i) {
    sites.push_back({"f" + std::to_string(i),
                     PROBE_KIND_MALLOC,
                     {kCode + 0x1000000 + i * 0x100ULL, kMallocLike, kMallocLike.size()}});
  }
  auto image = build_probe_image(kCode, code_area_size(sites.size()), kShared, sites);
  ASSERT_TRUE(image);
  EXPECT_EQ(image->sites[PROBE_MAX_SITES - 1].method, PatchMethod::Jump);
  EXPECT_EQ(image->sites[PROBE_MAX_SITES].method, PatchMethod::Refused);
}

TEST(ProbeCodeArea, PicksTheClosestGapInReach) {
  std::vector<MapEntry> maps = {
      {0x555555554000, 0x555555556000, true, true, 0, "/bin/app"},
      {0x7f0000000000, 0x7f0000010000, true, false, 0, ""},
      {0x7f0000020000, 0x7f0000200000, true, true, 0, "/lib/libc.so.6"},
      {0x7f0000200000, 0x7f0000300000, true, false, 0, ""},
      {0x7ffffffde000, 0x7ffffffff000, true, false, 0, "[stack]"},
  };
  auto range = module_range(maps, "/lib/libc.so.6");
  ASSERT_TRUE(range);
  auto a = find_code_area(maps, range->first, range->second, 0x3000);
  ASSERT_TRUE(a);
  EXPECT_EQ(*a, 0x7f000001d000u);  // the top of the gap just below libc
  EXPECT_EQ(*a % 4096, 0u);
  // No gap close enough: everything within reach is taken.
  std::vector<MapEntry> full = {{0x10000, 0x7ffffffff000, true, false, 0, "x"}};
  EXPECT_FALSE(find_code_area(full, 0x7f0000020000, 0x7f0000200000, 0x3000));
}

}  // namespace
}  // namespace profctl::probe
