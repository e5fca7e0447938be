// SPDX-License-Identifier: MIT
// x86-64 register mapping: PTRACE_GETREGS's user_regs_struct -> DWARF registers (STYLE 16).
#pragma once

#include <sys/user.h>

#include <array>
#include <cstdint>

namespace profctl {

// DWARF register numbers 0..16 of the x86-64 psABI (figure 3.36): 0 rax, 1 rdx, 2 rcx,
// 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15, 16 the return-address column (rip).
inline constexpr unsigned kX86_64DwarfRegs = 17;
inline constexpr unsigned kX86_64DwarfRsp = 7;
inline constexpr unsigned kX86_64DwarfRip = 16;

using X86_64DwarfRegs = std::array<uint64_t, kX86_64DwarfRegs>;

// The registers of a stopped thread in DWARF order, for dwfl_thread_state_registers.
X86_64DwarfRegs x86_64_dwarf_regs(const user_regs_struct& regs);

}  // namespace profctl
