// SPDX-License-Identifier: MIT
// The frame a remote syscall leaves below a thread's stack pointer so that the thread can
// put itself back if profctl dies in the middle (SIGKILL included). A remote syscall runs
// as a chain of the target's own instructions: a `syscall; ret` pair executes profctl's
// call, the `ret` pops the address of `mov $15, %rax; syscall` (glibc's __restore_rt),
// and rt_sigreturn(2) reloads every register, the FPU/vector state and the signal mask
// from this frame: the thread's own state from before the call. profctl normally stops the
// thread after the call and restores the registers itself; the frame is what makes every
// moment in between safe to be abandoned at (no single-step to leave armed, no register
// of profctl's to run with).
#pragma once

#include <sys/user.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"

namespace profctl {

// Kernel facts: the x86-64 rt_sigframe (arch/x86/include/asm/sigframe.h) is the return
// address slot, a struct ucontext (uapi asm-generic/ucontext.h with the x86-64 struct
// sigcontext) and a siginfo; the FPU state it points to must be 64-byte aligned.
inline constexpr size_t kSigframeSize = 8 + 304 + 128;
inline constexpr size_t kUcontextOffset = 8;
inline constexpr size_t kSigcontextOffset = kUcontextOffset + 40;
inline constexpr size_t kSigmaskOffset = kUcontextOffset + 296;
inline constexpr size_t kRedZone = 128;  // the x86-64 ABI's: below rsp, still the thread's

struct SigreturnFrame {
  uint64_t address = 0;          // the frame's first byte: rsp for the chain ([rsp] = restore_rt)
  std::vector<std::byte> bytes;  // to be written at `address`; ends below rsp - kRedZone
};

// Builds the frame for a thread stopped with `regs` and signal mask `sigmask`, whose
// extended state is `xstate` (PTRACE_GETREGSET NT_X86_XSTATE, or a 512-byte fxsave image
// from NT_PRFPREG when the CPU has no XSAVE), below `regs.rsp` and its red zone.
// `restore_rt`: the address of a `mov $15, %rax; syscall` sequence in the target.
// `stack_lo`: the lowest address of the mapping holding rsp (the frame must fit above it).
//
// A thread stopped inside an interrupted syscall (orig_rax >= 0, rax one of the kernel's
// restart codes) gets the restart the kernel would have done on its own resume (rip back
// over the syscall instruction, rax = its number): rt_sigreturn disables the kernel's
// restart logic, so the frame must already hold the restarted state.
Result<SigreturnFrame> build_sigreturn_frame(const user_regs_struct& regs, uint64_t sigmask,
                                             std::span<const std::byte> xstate, uint64_t restore_rt,
                                             uint64_t stack_lo);

// The registers a thread resumes with after the kernel's restart logic ran on them with no
// signal handler to deliver (see above). Pure; exposed for tests.
user_regs_struct restarted_regs(const user_regs_struct& regs);

}  // namespace profctl
