// SPDX-License-Identifier: MIT
// X86Decoder: one x86-64 instruction at a time (Zydis), for the code readers of probe/ that
// look for calls and syscalls in the target's functions (wait_sites, alloc_nesting).
#pragma once

#include <Zydis/Zydis.h>

#include <cstdint>
#include <span>

namespace profctl::probe {

struct Decoded {
  ZydisDecodedInstruction ins{};
  ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT]{};
};

class X86Decoder {
 public:
  X86Decoder() { ZydisDecoderInit(&d_, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64); }
  bool decode(std::span<const uint8_t> bytes, Decoded& out) const {
    return ZYAN_SUCCESS(ZydisDecoderDecodeFull(&d_, bytes.data(), bytes.size(), &out.ins, out.ops));
  }

 private:
  ZydisDecoder d_{};
};

}  // namespace profctl::probe
