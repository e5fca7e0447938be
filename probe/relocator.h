// SPDX-License-Identifier: MIT
// Relocator: moves the first instructions of a function to another address so that they
// can run there ("the original path") while a jmp or int3 overwrites them in place.
//
// The function bytes come from the target and are untrusted: every decode is bounded by
// the span, and anything that cannot be relocated exactly is refused with a reason, never
// patched approximately.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"

namespace profctl::probe {

// A function's code as read from the target.
struct FunctionCode {
  uint64_t address = 0;            // target address of bytes[0]: the function's entry
  std::span<const uint8_t> bytes;  // the whole function when size is known, else a window
  uint64_t size = 0;               // the symbol's size; 0 = unknown
};

// Size of the window scanned for branches into the patched range when the symbol size is
// unknown (decoding stops earlier at the first undecodable byte).
inline constexpr size_t kUnknownSizeScanWindow = 512;

struct Relocation {
  uint64_t patch_address = 0;   // where the patch goes: the entry, or after its endbr64
  size_t length = 0;            // original bytes relocated from patch_address (>= min_bytes)
  uint64_t resume_address = 0;  // patch_address + length: the original path continues here
  uint64_t new_address = 0;     // where `code` is meant to run
  std::vector<uint8_t> code;    // the relocated instructions, without the jump back
  size_t instructions = 0;
};

// Relocates the instructions at the patch address (the entry, or entry+4 when the entry is
// endbr64, which stays in place: an indirect call still lands on it) that cover at least
// `min_bytes` (5 for a jmp rel32 patch, 1 for an int3), for execution at `new_address`.
// RIP-relative operands and relative jmp/jcc are rewritten; a call becomes "push the
// original return address; jmp" (allowed only as the last relocated instruction). Refused
// (Error.what says why): undecodable bytes; int3/ud2/hlt in the range; ret or an unconditional jmp
// before min_bytes (the function is too short); loop/jrcxz/xbegin; a displacement that no longer
// fits rel32; a branch of the function (a jmp or jcc, from its bytes: all of them when
// the size is known, else kUnknownSizeScanWindow bytes) into [entry, resume_address).
Result<Relocation> relocate_entry(const FunctionCode& fn, size_t min_bytes, uint64_t new_address);

// True when a rel32 operand of an instruction ending at `next_ip` reaches `target`.
bool rel32_reaches(uint64_t next_ip, uint64_t target);

// A jmp placed at `from` to `to`: `jmp rel32` (5 bytes) when it reaches, else
// `jmp *0(%rip)` followed by the 8-byte address (14 bytes).
std::vector<uint8_t> encode_jump(uint64_t from, uint64_t to);

}  // namespace profctl::probe
