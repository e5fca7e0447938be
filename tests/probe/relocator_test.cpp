// Relocator on hand-assembled byte sequences: every rewrite and every refusal, with the
// exact bytes expected.
#include "probe/relocator.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace profctl::probe {
namespace {

constexpr uint64_t kFn = 0x7f0000001000;
constexpr uint64_t kNear = kFn + 0x100000;    // within rel32 reach
constexpr uint64_t kFar = kFn + 0x300000000;  // 12 GiB away: out of rel32 reach

int32_t read_i32(const std::vector<uint8_t>& v, size_t at) {
  int32_t x;
  std::memcpy(&x, v.data() + at, 4);
  return x;
}

uint64_t read_u64(const std::vector<uint8_t>& v, size_t at) {
  uint64_t x;
  std::memcpy(&x, v.data() + at, 8);
  return x;
}

Result<Relocation> reloc(const std::vector<uint8_t>& bytes, uint64_t size, uint64_t to,
                         size_t min_bytes = 5) {
  return relocate_entry(FunctionCode{kFn, bytes, size}, min_bytes, to);
}

TEST(ProbeRelocator, RipRelativeLeaIsRewritten) {
  // lea 0x10(%rip),%rax ; ret
  std::vector<uint8_t> f = {0x48, 0x8d, 0x05, 0x10, 0x00, 0x00, 0x00, 0xc3};
  auto r = reloc(f, f.size(), kNear);
  ASSERT_TRUE(r) << r.error().what;
  EXPECT_EQ(r->patch_address, kFn);
  EXPECT_EQ(r->length, 7u);
  EXPECT_EQ(r->resume_address, kFn + 7);
  ASSERT_EQ(r->code.size(), 7u);
  EXPECT_EQ(std::vector<uint8_t>(r->code.begin(), r->code.begin() + 3),
            (std::vector<uint8_t>{0x48, 0x8d, 0x05}));
  // Same absolute operand: kFn + 7 + 0x10 seen from kNear + 7.
  EXPECT_EQ(kNear + 7 + static_cast<int64_t>(read_i32(r->code, 3)), kFn + 7 + 0x10);
}

TEST(ProbeRelocator, RipRelativeWithImmediateAfterDisplacement) {
  // cmpb $0x0,0x141b46(%rip) (glibc malloc's second instruction shape) ; push %rbx ; ret
  std::vector<uint8_t> f = {0x80, 0x3d, 0x46, 0x1b, 0x14, 0x00, 0x00, 0x53, 0xc3};
  auto r = reloc(f, f.size(), kNear);
  ASSERT_TRUE(r) << r.error().what;
  EXPECT_EQ(r->length, 7u);
  ASSERT_EQ(r->code.size(), 7u);
  EXPECT_EQ(r->code[6], 0x00);  // the immediate is kept
  EXPECT_EQ(kNear + 7 + static_cast<int64_t>(read_i32(r->code, 2)), kFn + 7 + 0x141b46);
}

TEST(ProbeRelocator, RipRelativeOutOfReachIsRefused) {
  std::vector<uint8_t> f = {0x48, 0x8b, 0x05, 0x10, 0x00, 0x00, 0x00, 0xc3};  // mov rip,rax
  auto r = reloc(f, f.size(), kFar);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what.find("out of rel32 reach"), std::string::npos) << r.error().what;
}

TEST(ProbeRelocator, ShortJccBecomesNearJcc) {
  // test %rdi,%rdi ; je +0x10 ; (padding) — glibc free's first two instructions, short form
  std::vector<uint8_t> f(0x20, 0x90);
  const uint8_t head[] = {0x48, 0x85, 0xff, 0x74, 0x10};
  std::memcpy(f.data(), head, sizeof head);
  f[0x15] = 0xc3;
  auto r = reloc(f, f.size(), kNear);
  ASSERT_TRUE(r) << r.error().what;
  EXPECT_EQ(r->length, 5u);
  ASSERT_EQ(r->code.size(), 3u + 6u);
  EXPECT_EQ(r->code[3], 0x0f);
  EXPECT_EQ(r->code[4], 0x84);  // je rel32
  EXPECT_EQ(kNear + 9 + static_cast<int64_t>(read_i32(r->code, 5)), kFn + 5 + 0x10);
}

TEST(ProbeRelocator, JccOutOfReachBecomesInvertedJccOverAbsoluteJmp) {
  std::vector<uint8_t> f(0x20, 0x90);
  const uint8_t head[] = {0x48, 0x85, 0xff, 0x74, 0x10};
  std::memcpy(f.data(), head, sizeof head);
  auto r = reloc(f, f.size(), kFar);
  ASSERT_TRUE(r) << r.error().what;
  ASSERT_EQ(r->code.size(), 3u + 2u + 14u);
  EXPECT_EQ(r->code[3], 0x75);  // jne over ...
  EXPECT_EQ(r->code[4], 14);
  EXPECT_EQ(r->code[5], 0xff);  // ... jmp *0(%rip)
  EXPECT_EQ(r->code[6], 0x25);
  EXPECT_EQ(read_i32(r->code, 7), 0);
  EXPECT_EQ(read_u64(r->code, 11), kFn + 5 + 0x10);
}

TEST(ProbeRelocator, CallRel32IsRetargeted) {
  // call +0x100 ; ret
  std::vector<uint8_t> f = {0xe8, 0x00, 0x01, 0x00, 0x00, 0xc3};
  auto r = reloc(f, f.size(), kNear);
  ASSERT_TRUE(r) << r.error().what;
  ASSERT_EQ(r->code.size(), 5u);
  EXPECT_EQ(r->code[0], 0xe8);
  EXPECT_EQ(kNear + 5 + static_cast<int64_t>(read_i32(r->code, 1)), kFn + 5 + 0x100);

  auto far = reloc(f, f.size(), kFar);  // call *2(%rip); jmp +8; .quad target
  ASSERT_TRUE(far) << far.error().what;
  ASSERT_EQ(far->code.size(), 16u);
  EXPECT_EQ(far->code[0], 0xff);
  EXPECT_EQ(far->code[1], 0x15);
  EXPECT_EQ(far->code[6], 0xeb);
  EXPECT_EQ(read_u64(far->code, 8), kFn + 5 + 0x100);
}

TEST(ProbeRelocator, RetBeforeFiveBytesIsRefused) {
  std::vector<uint8_t> f = {0x31, 0xc0, 0xc3, 0xcc, 0xcc, 0xcc, 0xcc, 0xcc};  // xor; ret
  auto r = reloc(f, 0, kNear);  // size unknown: the ret is what stops it
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what.find("too short"), std::string::npos) << r.error().what;
  auto sized = reloc(f, 3, kNear);  // size known: refused up front
  ASSERT_FALSE(sized);
  EXPECT_NE(sized.error().what.find("too short"), std::string::npos) << sized.error().what;
  // The int3 fallback needs only the first instruction.
  auto one = reloc(f, 3, kNear, 1);
  ASSERT_TRUE(one) << one.error().what;
  EXPECT_EQ(one->length, 2u);
  EXPECT_EQ(one->code, (std::vector<uint8_t>{0x31, 0xc0}));
}

TEST(ProbeRelocator, BranchIntoPatchedRangeIsRefused) {
  // push %rbp ; mov %rsp,%rbp ; push %rbx ; nop... ; jmp back to +1 (inside the 5 bytes)
  std::vector<uint8_t> f = {0x55, 0x48, 0x89, 0xe5, 0x53, 0x90, 0x90, 0xeb, 0xf8, 0xc3};
  auto r = reloc(f, f.size(), kNear);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what.find("inside the patched range"), std::string::npos) << r.error().what;
  // A jump to the entry itself re-enters the patch: also refused.
  f[8] = 0xf7;  // jmp -9 -> +0
  EXPECT_FALSE(reloc(f, f.size(), kNear));
  // A jump to the resume address is fine.
  f[8] = 0xfc;  // jmp -4 -> +5
  auto ok = reloc(f, f.size(), kNear);
  EXPECT_TRUE(ok) << ok.error().what;
}

TEST(ProbeRelocator, RecursiveCallToEntryIsNotABranchIntoTheRange) {
  // push %rbx ; mov %rdi,%rbx ; ... ; call entry ; pop %rbx ; ret
  std::vector<uint8_t> f = {0x53, 0x48, 0x89, 0xfb, 0x90, 0xe8, 0xf6, 0xff, 0xff, 0xff, 0x5b, 0xc3};
  auto r = reloc(f, f.size(), kNear);
  EXPECT_TRUE(r) << r.error().what;
}

TEST(ProbeRelocator, Endbr64StaysAtTheEntry) {
  // endbr64 ; push %rbp ; mov %rsp,%rbp ; pop %rbp ; ret
  std::vector<uint8_t> f = {0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x90, 0x5d, 0xc3};
  auto r = reloc(f, f.size(), kNear);
  ASSERT_TRUE(r) << r.error().what;
  EXPECT_EQ(r->patch_address, kFn + 4);
  EXPECT_EQ(r->length, 5u);  // push(1) + mov(3) + nop(1)
  EXPECT_EQ(r->code, (std::vector<uint8_t>{0x55, 0x48, 0x89, 0xe5, 0x90}));
  // The endbr64 itself is not counted in the function's room: 4 + 5 > 8.
  EXPECT_FALSE(reloc(f, 8, kNear));
}

TEST(ProbeRelocator, Int3InRangeIsRefused) {
  std::vector<uint8_t> f = {0x55, 0xcc, 0x89, 0xe5, 0x90, 0x90, 0xc3};
  auto r = reloc(f, f.size(), kNear);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what.find("int3"), std::string::npos) << r.error().what;
}

TEST(ProbeRelocator, UndecodableBytesAreRefused) {
  std::vector<uint8_t> f = {0x0f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
  EXPECT_FALSE(reloc(f, 0, kNear));
  // Truncated input: the instruction runs past the given bytes.
  std::vector<uint8_t> cut = {0x48, 0x8d, 0x05, 0x10};
  EXPECT_FALSE(reloc(cut, 0, kNear));
  // Fewer bytes than the symbol size claims.
  std::vector<uint8_t> short_bytes = {0x55, 0x48, 0x89, 0xe5, 0x90, 0xc3};
  EXPECT_FALSE(reloc(short_bytes, 64, kNear));
}

TEST(ProbeRelocator, UnconditionalJmpCompletingThePatchIsAllowed) {
  // jmp *0x10(%rip) (6 bytes: a PLT-like thunk) — relocated with the displacement fixed.
  std::vector<uint8_t> f = {0xff, 0x25, 0x10, 0x00, 0x00, 0x00};
  auto r = reloc(f, f.size(), kNear);
  ASSERT_TRUE(r) << r.error().what;
  EXPECT_EQ(kNear + 6 + static_cast<int64_t>(read_i32(r->code, 2)), kFn + 6 + 0x10);
  // A 2-byte short jmp first is "too short" for a 5-byte patch.
  std::vector<uint8_t> j = {0xeb, 0x10, 0x90, 0x90, 0x90, 0x90, 0xc3};
  EXPECT_FALSE(reloc(j, 0, kNear));
}

TEST(ProbeRelocator, LoopIsRefused) {
  std::vector<uint8_t> f = {0xe2, 0x10, 0x90, 0x90, 0x90, 0x90, 0xc3};  // loop +0x10
  auto r = reloc(f, 0, kNear);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().what.find("loop"), std::string::npos) << r.error().what;
}

TEST(ProbeRelocator, EncodeJump) {
  auto near = encode_jump(kFn, kNear);
  ASSERT_EQ(near.size(), 5u);
  EXPECT_EQ(near[0], 0xe9);
  EXPECT_EQ(kFn + 5 + static_cast<int64_t>(read_i32(near, 1)), kNear);
  auto far = encode_jump(kFn, kFar);
  ASSERT_EQ(far.size(), 14u);
  EXPECT_EQ(read_u64(far, 6), kFar);
}

}  // namespace
}  // namespace profctl::probe
