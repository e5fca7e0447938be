// SPDX-License-Identifier: MIT
// The sigreturn frame a remote syscall leaves below a thread's stack pointer: the layout
// rt_sigreturn(2) reads on x86-64, the restart the kernel would have done, and the xsave
// description. The frame is also executed for real by ProbeSafety.SigkillAtAnyMoment*.
#include "attach/sigreturn_frame.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>

namespace profctl {
namespace {

template <class T>
T at(const SigreturnFrame& f, size_t off) {
  T v{};
  std::memcpy(&v, f.bytes.data() + off, sizeof v);
  return v;
}

user_regs_struct sample_regs() {
  user_regs_struct r{};
  r.rsp = 0x7ffd00010000;
  r.rip = 0x7f0000001234;
  r.rax = 0x1111;
  r.rbx = 0x2222;
  r.r15 = 0x3333;
  r.eflags = 0x246;
  r.cs = 0x33;
  r.ss = 0x2b;
  r.orig_rax = static_cast<unsigned long long>(-1);
  return r;
}

TEST(SigreturnFrame, AThreadInUserCodeGetsItsOwnRegistersBack) {
  const user_regs_struct r = sample_regs();
  std::vector<std::byte> fx(512);
  auto f = build_sigreturn_frame(r, 0x8000, fx, 0x7f0000009999, 0x7ffd00000000);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->address % 16, 0u);
  EXPECT_EQ(f->address + f->bytes.size(), r.rsp - kRedZone);  // the red zone is left alone
  EXPECT_EQ(at<uint64_t>(*f, 0), 0x7f0000009999u);            // popped by the chain's ret
  const size_t sc = kSigcontextOffset;
  EXPECT_EQ(at<uint64_t>(*f, sc + 7 * 8), r.r15);
  EXPECT_EQ(at<uint64_t>(*f, sc + 11 * 8), r.rbx);
  EXPECT_EQ(at<uint64_t>(*f, sc + 13 * 8), r.rax);
  EXPECT_EQ(at<uint64_t>(*f, sc + 15 * 8), r.rsp);
  EXPECT_EQ(at<uint64_t>(*f, sc + 16 * 8), r.rip);
  EXPECT_EQ(at<uint16_t>(*f, sc + 144), 0x33);
  EXPECT_EQ(at<uint16_t>(*f, sc + 150), 0x2b);
  EXPECT_EQ(at<uint64_t>(*f, kSigmaskOffset), 0x8000u);
  // The FPU state pointer is 64-byte aligned and inside the frame.
  const auto fp = at<uint64_t>(*f, sc + 184);
  EXPECT_EQ(fp % 64, 0u);
  EXPECT_GE(fp, f->address + kSigframeSize);
  EXPECT_LE(fp + 512, f->address + f->bytes.size());
  // uc_stack's mode is invalid, so the thread's sigaltstack is never changed.
  EXPECT_EQ(at<uint32_t>(*f, kUcontextOffset + 16 + 8), 3u);
}

TEST(SigreturnFrame, AnInterruptedSyscallIsRestartedAsTheKernelWouldHave) {
  user_regs_struct r = sample_regs();
  r.orig_rax = 202;  // futex
  for (long code : {-512L, -513L, -514L}) {
    r.rax = static_cast<unsigned long long>(code);
    const user_regs_struct out = restarted_regs(r);
    EXPECT_EQ(out.rax, 202u) << code;
    EXPECT_EQ(out.rip, r.rip - 2) << code;
    EXPECT_EQ(static_cast<long>(out.orig_rax), -1);
  }
  r.rax = static_cast<unsigned long long>(-516);  // ERESTART_RESTARTBLOCK
  EXPECT_EQ(static_cast<long>(restarted_regs(r).rax), -EINTR);
  EXPECT_EQ(restarted_regs(r).rip, r.rip);
  r.rax = 0;  // a finished call: nothing to restart
  EXPECT_EQ(restarted_regs(r).rax, 0u);
  EXPECT_EQ(restarted_regs(r).rip, r.rip);
}

TEST(SigreturnFrame, TheXsaveAreaEndsAfterItsLastComponentInUseWithTheKernelsMagic) {
  std::vector<std::byte> xs(4096);
  const uint64_t xcr0 = 0x7;  // x87, SSE, AVX
  std::memcpy(xs.data() + 464, &xcr0, 8);
  const uint64_t in_use = 0x7;
  std::memcpy(xs.data() + 512, &in_use, 8);
  auto f = build_sigreturn_frame(sample_regs(), 0, xs, 1, 0x7ffd00000000);
  ASSERT_TRUE(f);
  const auto fp = at<uint64_t>(*f, kSigcontextOffset + 184) - f->address;
  const auto magic1 = at<uint32_t>(*f, fp + 464);
  const auto size = at<uint32_t>(*f, fp + 480);
  EXPECT_EQ(magic1, 0x46505853u);
  EXPECT_EQ(at<uint32_t>(*f, fp + 468), size + 4);
  EXPECT_EQ(at<uint32_t>(*f, fp + size), 0x46505845u);  // FP_XSTATE_MAGIC2
  EXPECT_GE(size, 576u + 256u);  // the legacy area, the header, AVX's upper halves
}

TEST(SigreturnFrame, NoRoomBelowTheStackPointerIsAnError) {
  user_regs_struct r = sample_regs();
  std::vector<std::byte> fx(512);
  EXPECT_FALSE(build_sigreturn_frame(r, 0, fx, 1, r.rsp - 256));
  EXPECT_FALSE(build_sigreturn_frame(r, 0, std::vector<std::byte>(100), 1, 0x7ffd00000000));
}

}  // namespace
}  // namespace profctl
