// SPDX-License-Identifier: MIT
#include "attach/sigreturn_frame.h"

#include <cpuid.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace profctl {
namespace {

// Restart codes (include/linux/errno.h, kernel-internal): what an interrupted syscall
// leaves in rax for the kernel to act on when the thread returns to user mode.
constexpr int64_t kErestartSys = -512;
constexpr int64_t kErestartNoIntr = -513;
constexpr int64_t kErestartNoHand = -514;
constexpr int64_t kErestartRestartBlock = -516;

constexpr uint32_t kFpXstateMagic1 = 0x46505853;  // "FPXS": sw_reserved holds _fpx_sw_bytes
constexpr uint32_t kFpXstateMagic2 = 0x46505845;  // "FPXE": after the xsave area
constexpr size_t kFxsaveSize = 512;
constexpr size_t kXsaveHeaderEnd = kFxsaveSize + 64;
constexpr size_t kSwBytesOffset = 464;  // fxregs_state.sw_reserved

constexpr uint64_t kUcFpXstate = 0x1;
constexpr uint64_t kUcSigcontextSs = 0x2;
constexpr uint64_t kUcStrictRestoreSs = 0x4;

template <class T>
void put(std::vector<std::byte>& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof v);
}

template <class T>
T get(std::span<const std::byte> b, size_t off) {
  T v{};
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

// The standard-format xsave area as rt_sigreturn will accept it: the kernel restores it
// only if its size fits the thread's own (which excludes AMX tile data unless the process
// asked for it), so the area ends after the last component that is actually in use.
Result<std::vector<std::byte>> sigframe_fpstate(std::span<const std::byte> xstate) {
  if (xstate.size() == kFxsaveSize) {
    // No XSAVE: a plain fxsave image; without the magic the kernel restores it as one.
    std::vector<std::byte> out(xstate.begin(), xstate.end());
    std::fill(out.begin() + kSwBytesOffset, out.end(), std::byte{0});
    return out;
  }
  if (xstate.size() < kXsaveHeaderEnd) {
    return Error{"extended register state too short (" + std::to_string(xstate.size()) + ")"};
  }
  // NT_X86_XSTATE puts XCR0 (the user features) where a signal frame has _fpx_sw_bytes
  // (gdb reads it there too); the frame's own description is written below.
  const auto sw_features = get<uint64_t>(xstate, kSwBytesOffset);
  const auto in_use = get<uint64_t>(xstate, kFxsaveSize);  // XSTATE_BV
  if ((sw_features & 0x3) != 0x3) {
    return Error{"extended register state without x87/SSE features"};
  }
  size_t end = kXsaveHeaderEnd;
  uint64_t features = sw_features & 0x3;  // x87 and SSE live in the legacy area
  for (unsigned i = 2; i < 63; ++i) {
    if ((sw_features & (1ULL << i)) == 0) {
      continue;
    }
    unsigned size = 0;
    unsigned offset = 0;
    unsigned ecx = 0;
    unsigned edx = 0;
    if (__get_cpuid_count(0xd, i, &size, &offset, &ecx, &edx) == 0 || size == 0 ||
        offset < kXsaveHeaderEnd) {
      continue;  // not a user (standard-format) component
    }
    if ((in_use & (1ULL << i)) != 0) {
      end = std::max<size_t>(end, size_t{offset} + size);
    }
  }
  if (end > xstate.size()) {
    return Error{"extended register state shorter than its components"};
  }
  // Only the components inside the area: any other is in its initial state (not in use),
  // and the kernel puts components it does not restore into their initial state.
  for (unsigned i = 2; i < 63; ++i) {
    unsigned size = 0;
    unsigned offset = 0;
    unsigned ecx = 0;
    unsigned edx = 0;
    if ((sw_features & (1ULL << i)) != 0 && __get_cpuid_count(0xd, i, &size, &offset, &ecx, &edx) &&
        size != 0 && offset >= kXsaveHeaderEnd && size_t{offset} + size <= end) {
      features |= 1ULL << i;
    }
  }
  std::vector<std::byte> out(end + 4);
  std::copy_n(xstate.begin(), end, out.begin());
  // XSTATE_BV may only name restored components.
  put<uint64_t>(out, kFxsaveSize, in_use & features);
  put<uint32_t>(out, kSwBytesOffset, kFpXstateMagic1);
  put<uint32_t>(out, kSwBytesOffset + 4, static_cast<uint32_t>(end + 4));  // extended_size
  put<uint64_t>(out, kSwBytesOffset + 8, features);
  put<uint32_t>(out, kSwBytesOffset + 16, static_cast<uint32_t>(end));  // xstate_size
  std::fill(out.begin() + kSwBytesOffset + 20, out.begin() + kFxsaveSize, std::byte{0});
  put<uint32_t>(out, end, kFpXstateMagic2);
  return out;
}

}  // namespace

user_regs_struct restarted_regs(const user_regs_struct& regs) {
  user_regs_struct r = regs;
  if (static_cast<int64_t>(r.orig_rax) < 0) {
    return r;
  }
  const auto rax = static_cast<int64_t>(r.rax);
  if (rax == kErestartSys || rax == kErestartNoIntr || rax == kErestartNoHand) {
    r.rax = r.orig_rax;
    r.rip -= 2;
  } else if (rax == kErestartRestartBlock) {
    // The restart would need the thread's restart block, which rt_sigreturn resets: the
    // call returns EINTR instead, as it does when a handler runs.
    r.rax = static_cast<unsigned long long>(-EINTR);
  }
  r.orig_rax = static_cast<unsigned long long>(-1);
  return r;
}

Result<SigreturnFrame> build_sigreturn_frame(const user_regs_struct& regs, uint64_t sigmask,
                                             std::span<const std::byte> xstate, uint64_t restore_rt,
                                             uint64_t stack_lo) {
  auto fp = sigframe_fpstate(xstate);
  if (!fp) {
    return fp.error();
  }
  if (regs.rsp < stack_lo + kRedZone + fp->size() + kSigframeSize + 128) {
    return Error{"no room below the thread's stack pointer for a sigreturn frame"};
  }
  const uint64_t top = regs.rsp - kRedZone;
  const uint64_t fp_addr = (top - fp->size()) & ~uint64_t{63};
  const uint64_t frame = (fp_addr - kSigframeSize) & ~uint64_t{15};

  SigreturnFrame out;
  out.address = frame;
  out.bytes.assign(top - frame, std::byte{0});
  const user_regs_struct r = restarted_regs(regs);
  put<uint64_t>(out.bytes, 0, restore_rt);  // pretcode: popped by the chain's `ret`
  const size_t uc = kUcontextOffset;
  put<uint64_t>(out.bytes, uc + 0, kUcFpXstate | kUcSigcontextSs | kUcStrictRestoreSs);
  // uc_stack: an invalid mode, so rt_sigreturn's sigaltstack update fails (it ignores the
  // error) and the thread keeps the alternate stack it has.
  put<uint32_t>(out.bytes, uc + 16 + 8, 3);
  const size_t sc = kSigcontextOffset;
  const uint64_t gprs[] = {r.r8,  r.r9,  r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi,
                           r.rsi, r.rbp, r.rbx, r.rdx, r.rax, r.rcx, r.rsp, r.rip, r.eflags};
  for (size_t i = 0; i < std::size(gprs); ++i) {
    put<uint64_t>(out.bytes, sc + 8 * i, gprs[i]);
  }
  put<uint16_t>(out.bytes, sc + 144, static_cast<uint16_t>(r.cs));
  put<uint16_t>(out.bytes, sc + 150, static_cast<uint16_t>(r.ss));
  put<uint64_t>(out.bytes, sc + 184, fp_addr);
  put<uint64_t>(out.bytes, kSigmaskOffset, sigmask);
  std::memcpy(out.bytes.data() + (fp_addr - frame), fp->data(), fp->size());
  return out;
}

}  // namespace profctl
