// SPDX-License-Identifier: MIT
// Relocator on hand-assembled byte sequences: every rewrite and every refusal, with the
// exact bytes expected.
#include "probe/relocator.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

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

TEST(ProbeRelocator, CallPushesTheOriginalReturnAddress) {
  // call +0x100 ; ret
  std::vector<uint8_t> f = {0xe8, 0x00, 0x01, 0x00, 0x00, 0xc3};
  auto r = reloc(f, f.size(), kNear);
  ASSERT_TRUE(r) << r.error().what;
  EXPECT_EQ(r->resume_address, kFn + 5);
  // lea -8(%rsp),%rsp; push %rax; movabs $kFn+5,%rax; mov %rax,8(%rsp); pop %rax; jmp
  ASSERT_EQ(r->code.size(), 22u + 5u);
  EXPECT_EQ(std::vector<uint8_t>(r->code.begin(), r->code.begin() + 8),
            (std::vector<uint8_t>{0x48, 0x8d, 0x64, 0x24, 0xf8, 0x50, 0x48, 0xb8}));
  EXPECT_EQ(read_u64(r->code, 8), kFn + 5);  // the callee returns into the function
  EXPECT_EQ(std::vector<uint8_t>(r->code.begin() + 16, r->code.begin() + 22),
            (std::vector<uint8_t>{0x48, 0x89, 0x44, 0x24, 0x08, 0x58}));
  EXPECT_EQ(r->code[22], 0xe9);
  EXPECT_EQ(kNear + 27 + static_cast<int64_t>(read_i32(r->code, 23)), kFn + 5 + 0x100);

  auto far = reloc(f, f.size(), kFar);  // the jmp becomes absolute
  ASSERT_TRUE(far) << far.error().what;
  ASSERT_EQ(far->code.size(), 22u + 14u);
  EXPECT_EQ(read_u64(far->code, 28), kFn + 5 + 0x100);

  // A call that does not end the range would return into relocated code: refused (the
  // int3 fallback relocates it alone).
  std::vector<uint8_t> g = {0xe8, 0x00, 0x01, 0x00, 0x00, 0x90, 0xc3};
  EXPECT_FALSE(reloc(g, g.size(), kNear, 6));
  EXPECT_TRUE(reloc(g, g.size(), kNear, 1));
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

namespace profctl::probe {
namespace {

// Executable scratch: functions are written in it, relocated elsewhere in it (followed by
// the jump back), and the relocated entry is called: the behaviour must be the original's.
class Scratch {
 public:
  Scratch() {
    mem_ = static_cast<uint8_t*>(mmap(nullptr, 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  }
  ~Scratch() { munmap(mem_, 4096); }
  bool ok() const { return mem_ != MAP_FAILED; }
  uint64_t at(size_t off) const { return reinterpret_cast<uint64_t>(mem_) + off; }
  void put(size_t off, const std::vector<uint8_t>& b) {
    std::memcpy(mem_ + off, b.data(), b.size());
  }
  std::span<const uint8_t> bytes(size_t off, size_t n) const { return {mem_ + off, n}; }

  // Relocates the function at `off` (size `n`) to `dest` and returns the new entry.
  uint64_t relocate(size_t off, size_t n, size_t dest, size_t min_bytes = 5) {
    auto r = relocate_entry(FunctionCode{at(off), bytes(off, n), n}, min_bytes, at(dest));
    EXPECT_TRUE(r) << (r ? "" : r.error().what);
    if (!r) {
      return 0;
    }
    std::vector<uint8_t> code = r->code;
    auto back = encode_jump(at(dest) + code.size(), r->resume_address);
    code.insert(code.end(), back.begin(), back.end());
    put(dest, code);
    return at(dest);
  }

 private:
  uint8_t* mem_ = nullptr;
};

TEST(ProbeRelocator, RelocatedCodeRuns) {
  Scratch s;
  ASSERT_TRUE(s.ok());
  // callee at 0x100: mov $42,%eax ; ret
  s.put(0x100, {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3});
  // f1 at 0x000: call 0x100 ; add $1,%eax ; ret      -> 43
  s.put(0x000, {0xe8, 0xfb, 0x00, 0x00, 0x00, 0x83, 0xc0, 0x01, 0xc3});
  // f2 at 0x020: lea 0x59(%rip),%rax (-> 0x80) ; ret
  s.put(0x020, {0x48, 0x8d, 0x05, 0x59, 0x00, 0x00, 0x00, 0xc3});
  // f3 at 0x040: test %rdi,%rdi ; je +3 ; mov %rdi,%rax ; ret ; (je:) mov $7,%eax ; ret
  s.put(0x040,
        {0x48, 0x85, 0xff, 0x74, 0x04, 0x48, 0x89, 0xf8, 0xc3, 0xb8, 0x07, 0x00, 0x00, 0x00, 0xc3});
  // (f3's je +4 targets 0x049: mov $7,%eax)

  auto f1 = reinterpret_cast<int (*)()>(s.relocate(0x000, 9, 0x200));
  auto f2 = reinterpret_cast<uint64_t (*)()>(s.relocate(0x020, 8, 0x240));
  auto f3 = reinterpret_cast<uint64_t (*)(uint64_t)>(s.relocate(0x040, 15, 0x280));
  auto f1_int3 = reinterpret_cast<int (*)()>(s.relocate(0x000, 9, 0x2c0, 1));
  ASSERT_TRUE(f1 && f2 && f3 && f1_int3);
  EXPECT_EQ(f1(), 43);
  EXPECT_EQ(f1_int3(), 43);
  EXPECT_EQ(f2(), s.at(0x80));
  EXPECT_EQ(f3(0), 7u);
  EXPECT_EQ(f3(99), 99u);
}

}  // namespace
}  // namespace profctl::probe
