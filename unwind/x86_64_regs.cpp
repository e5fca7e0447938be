// SPDX-License-Identifier: MIT
#include "unwind/x86_64_regs.h"

namespace profctl {

X86_64DwarfRegs x86_64_dwarf_regs(const user_regs_struct& r) {
  return {
      r.rax, r.rdx, r.rcx, r.rbx,  // 0-3
      r.rsi, r.rdi, r.rbp, r.rsp,  // 4-7
      r.r8,  r.r9,  r.r10, r.r11,  // 8-11
      r.r12, r.r13, r.r14, r.r15,  // 12-15
      r.rip,                       // 16: return-address column
  };
}

}  // namespace profctl
