// SPDX-License-Identifier: MIT
#include "probe/relocator.h"

#include <Zydis/Zydis.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <optional>
#include <string>

#include "base/text_fields.h"

namespace profctl::probe {
namespace {

constexpr uint8_t kEndbr64[] = {0xF3, 0x0F, 0x1E, 0xFA};

Error refuse(const std::string& why, uint64_t at) {
  return Error{"cannot relocate at " + hex(at) + ": " + why, 0};
}

struct Instruction {
  ZydisDecodedInstruction ins{};
  ZydisDecodedOperand ops[ZYDIS_MAX_OPERAND_COUNT]{};
};

class Decoder {
 public:
  Decoder() { ZydisDecoderInit(&decoder_, ZYDIS_MACHINE_MODE_LONG_64, ZYDIS_STACK_WIDTH_64); }
  bool decode(std::span<const uint8_t> bytes, Instruction& out) const {
    if (bytes.empty()) {
      return false;
    }
    return ZYAN_SUCCESS(
        ZydisDecoderDecodeFull(&decoder_, bytes.data(), bytes.size(), &out.ins, out.ops));
  }

 private:
  ZydisDecoder decoder_{};
};

// Target of a relative branch operand (jmp/jcc/call/loop/xbegin rel8/rel32), if any.
std::optional<uint64_t> relative_target(const Instruction& i, uint64_t address) {
  for (unsigned k = 0; k < i.ins.operand_count_visible; ++k) {
    const ZydisDecodedOperand& op = i.ops[k];
    if (op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE && op.imm.is_relative) {
      ZyanU64 target = 0;
      if (ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&i.ins, &op, address, &target))) {
        return target;
      }
    }
  }
  return std::nullopt;
}

// The RIP-relative memory operand's absolute address, if the instruction has one.
std::optional<uint64_t> rip_relative_target(const Instruction& i, uint64_t address) {
  for (unsigned k = 0; k < i.ins.operand_count; ++k) {
    const ZydisDecodedOperand& op = i.ops[k];
    if (op.type == ZYDIS_OPERAND_TYPE_MEMORY && op.mem.base == ZYDIS_REGISTER_RIP) {
      ZyanU64 target = 0;
      if (ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&i.ins, &op, address, &target))) {
        return target;
      }
    }
  }
  return std::nullopt;
}

bool is_jcc(const Instruction& i) {
  if (i.ins.meta.category != ZYDIS_CATEGORY_COND_BR) {
    return false;
  }
  // 0x70-0x7f (rel8) and 0x0f 0x80-0x8f (rel32); not loop/jrcxz (0xe0-0xe3).
  if (i.ins.opcode_map == ZYDIS_OPCODE_MAP_DEFAULT) {
    return i.ins.opcode >= 0x70 && i.ins.opcode <= 0x7f;
  }
  return i.ins.opcode_map == ZYDIS_OPCODE_MAP_0F && i.ins.opcode >= 0x80 && i.ins.opcode <= 0x8f;
}

bool is_jmp_or_jcc(const Instruction& i) {
  return (i.ins.mnemonic == ZYDIS_MNEMONIC_JMP || i.ins.meta.category == ZYDIS_CATEGORY_COND_BR);
}

// Instructions after which the function's code may end (what follows may be another
// function or padding).
bool is_terminator(const Instruction& i) {
  return i.ins.meta.category == ZYDIS_CATEGORY_RET ||
         i.ins.meta.category == ZYDIS_CATEGORY_UNCOND_BR;
}

bool is_trap(const Instruction& i) {
  switch (i.ins.mnemonic) {
    case ZYDIS_MNEMONIC_INT3:
    case ZYDIS_MNEMONIC_INT:
    case ZYDIS_MNEMONIC_INT1:
    case ZYDIS_MNEMONIC_UD0:
    case ZYDIS_MNEMONIC_UD1:
    case ZYDIS_MNEMONIC_UD2:
    case ZYDIS_MNEMONIC_HLT:
      return true;
    default:
      return false;
  }
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int b = 0; b < 4; ++b) {
    out.push_back(static_cast<uint8_t>(v >> (8 * b)));
  }
}

void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  for (int b = 0; b < 8; ++b) {
    out.push_back(static_cast<uint8_t>(v >> (8 * b)));
  }
}

int32_t rel32(uint64_t next_ip, uint64_t target) {
  return static_cast<int32_t>(static_cast<int64_t>(target - next_ip));
}

// Appends a branch to `target` at address `at` (= where `out` will run + out.size()).
void emit_jmp(std::vector<uint8_t>& out, uint64_t at, uint64_t target) {
  std::vector<uint8_t> j = encode_jump(at, target);
  out.insert(out.end(), j.begin(), j.end());
}

// A call relocated as "push the original return address; jmp target": the callee returns
// straight into the original function (at the resume address) and anything that reads the
// return address (an unwinder, a call/pop idiom) sees the original one. Registers and
// flags are unchanged:
//   lea -8(%rsp),%rsp; push %rax; movabs $ret,%rax; mov %rax,8(%rsp); pop %rax; jmp target
void emit_call_as_push_jmp(std::vector<uint8_t>& out, uint64_t at, uint64_t return_address,
                           uint64_t target) {
  for (uint8_t b : {0x48, 0x8D, 0x64, 0x24, 0xF8, 0x50, 0x48, 0xB8}) {
    out.push_back(b);
  }
  put_u64(out, return_address);
  for (uint8_t b : {0x48, 0x89, 0x44, 0x24, 0x08, 0x58}) {
    out.push_back(b);
  }
  emit_jmp(out, at + 5 + 1 + 10 + 5 + 1, target);
}

void emit_jcc(std::vector<uint8_t>& out, uint64_t at, uint8_t cond, uint64_t target) {
  if (rel32_reaches(at + 6, target)) {
    out.push_back(0x0F);
    out.push_back(static_cast<uint8_t>(0x80 | cond));
    put_u32(out, static_cast<uint32_t>(rel32(at + 6, target)));
    return;
  }
  // The inverted condition skips an absolute jmp (14 bytes).
  out.push_back(static_cast<uint8_t>(0x70 | (cond ^ 1)));
  out.push_back(14);
  emit_jmp(out, at + 2, target);
}

// Every jmp/jcc in the function's code (calls are entries, not a problem) must land
// outside [guard_lo, guard_hi). Returns the refusal, if any.
std::optional<Error> check_branches_into(const Decoder& dec, const FunctionCode& fn,
                                         uint64_t guard_lo, uint64_t guard_hi) {
  bool size_known = fn.size != 0;
  size_t limit =
      size_known ? static_cast<size_t>(fn.size) : std::min(fn.bytes.size(), kUnknownSizeScanWindow);
  size_t off = 0;
  Instruction i;
  while (off < limit) {
    if (!dec.decode(fn.bytes.subspan(off, limit - off), i)) {
      if (size_known) {
        return refuse("undecodable byte at +" + hex(off) +
                          ": cannot verify that no branch enters the patched range",
                      fn.address + off);
      }
      break;  // the end of the function is unknown: stop at the first non-code
    }
    uint64_t at = fn.address + off;
    if (is_jmp_or_jcc(i)) {
      if (auto target = relative_target(i, at);
          target && *target >= guard_lo && *target < guard_hi) {
        return refuse("the branch at +" + hex(off) + " targets " + hex(*target) +
                          ", inside the patched range",
                      at);
      }
    }
    off += i.ins.length;
  }
  return std::nullopt;
}

// Where the patch starts (after an endbr64, which stays at the entry), or why the function
// cannot take a patch of min_bytes.
Result<size_t> patch_offset(const FunctionCode& fn, size_t min_bytes) {
  if (min_bytes == 0) {
    return Error{"relocate_entry: min_bytes must be at least 1", 0};
  }
  if (fn.size != 0 && fn.bytes.size() < fn.size) {
    return refuse("only " + std::to_string(fn.bytes.size()) + " of the function's " +
                      std::to_string(fn.size) + " bytes were given",
                  fn.address);
  }
  size_t start = 0;
  if (fn.bytes.size() >= sizeof kEndbr64 &&
      std::equal(std::begin(kEndbr64), std::end(kEndbr64), fn.bytes.begin())) {
    start = sizeof kEndbr64;
  }
  if (fn.size != 0 && start + min_bytes > fn.size) {
    return refuse("the function is " + std::to_string(fn.size) + " bytes: too short for a " +
                      std::to_string(min_bytes) + "-byte patch",
                  fn.address);
  }
  return start;
}

// Appends the instruction `i` at `off` of the function, rewritten to run at the end of
// r.code; `covered`: the bytes relocated before it. Returns the refusal, if any.
std::optional<Error> relocate_instruction(const Instruction& i, const FunctionCode& fn, size_t off,
                                          size_t covered, size_t min_bytes, Relocation& r) {
  const uint64_t at = fn.address + off;
  const size_t len = i.ins.length;
  const uint64_t dst = r.new_address + r.code.size();
  if (is_trap(i)) {
    return refuse("int3/ud2/hlt in the patched range (another tool's breakpoint?)", at);
  }
  if (is_terminator(i) && covered + len < min_bytes) {
    return refuse("ret or jmp before " + std::to_string(min_bytes) +
                      " bytes: the function is too short to patch",
                  at);
  }
  if (std::optional<uint64_t> target = relative_target(i, at)) {
    if (i.ins.mnemonic == ZYDIS_MNEMONIC_JMP) {
      emit_jmp(r.code, dst, *target);
    } else if (i.ins.mnemonic == ZYDIS_MNEMONIC_CALL) {
      if (covered + len < min_bytes) {
        // Its return would have to come back into the relocated code, where no unwinder
        // finds CFI; the int3 fallback relocates it alone, as the last instruction.
        return refuse("call before the end of the patched range", at);
      }
      emit_call_as_push_jmp(r.code, dst, at + len, *target);
    } else if (is_jcc(i)) {
      emit_jcc(r.code, dst, static_cast<uint8_t>(i.ins.opcode & 0x0F), *target);
    } else {
      return refuse("relative instruction that cannot be relocated (loop/jrcxz/xbegin)", at);
    }
    return std::nullopt;
  }
  const size_t pos = r.code.size();
  r.code.insert(r.code.end(), fn.bytes.begin() + off, fn.bytes.begin() + off + len);
  if (auto mem = rip_relative_target(i, at)) {
    if (i.ins.raw.disp.size != 32 || size_t{i.ins.raw.disp.offset} + 4 > len) {
      return refuse("RIP-relative operand without a 32-bit displacement", at);
    }
    const uint64_t new_next = dst + len;
    if (!rel32_reaches(new_next, *mem)) {
      return refuse(
          "RIP-relative operand " + hex(*mem) + " out of rel32 reach of " + hex(r.new_address), at);
    }
    auto disp = static_cast<uint32_t>(rel32(new_next, *mem));
    for (int b = 0; b < 4; ++b) {
      r.code[pos + i.ins.raw.disp.offset + b] = static_cast<uint8_t>(disp >> (8 * b));
    }
  }
  return std::nullopt;
}

// A relocated branch back into [entry, resume) would run the overwritten bytes.
std::optional<Error> check_relocated_branches(const Decoder& dec, const FunctionCode& fn,
                                              size_t start, size_t end, size_t avail,
                                              uint64_t resume) {
  Instruction i;
  size_t o = start;
  while (o < end) {
    (void)dec.decode(fn.bytes.subspan(o, avail - o), i);
    if (auto t = relative_target(i, fn.address + o); t && *t >= fn.address && *t < resume) {
      return refuse("branch into the relocated range", fn.address + o);
    }
    o += i.ins.length;
  }
  return std::nullopt;
}

}  // namespace

bool rel32_reaches(uint64_t next_ip, uint64_t target) {
  int64_t d = static_cast<int64_t>(target - next_ip);
  return d >= INT32_MIN && d <= INT32_MAX;
}

std::vector<uint8_t> encode_jump(uint64_t from, uint64_t to) {
  std::vector<uint8_t> out;
  if (rel32_reaches(from + 5, to)) {
    out.push_back(0xE9);
    put_u32(out, static_cast<uint32_t>(rel32(from + 5, to)));
    return out;
  }
  for (uint8_t b : {0xFF, 0x25, 0x00, 0x00, 0x00, 0x00}) {
    out.push_back(b);
  }
  put_u64(out, to);
  return out;
}

Result<Relocation> relocate_entry(const FunctionCode& fn, size_t min_bytes, uint64_t new_address) {
  auto start = patch_offset(fn, min_bytes);
  if (!start) {
    return start.error();
  }
  const size_t avail = fn.size != 0 ? static_cast<size_t>(fn.size) : fn.bytes.size();
  Decoder dec;
  Relocation r;
  r.patch_address = fn.address + *start;
  r.new_address = new_address;
  size_t off = *start;
  Instruction i;
  while (off - *start < min_bytes) {
    if (off >= avail || !dec.decode(fn.bytes.subspan(off, avail - off), i)) {
      return refuse(off >= avail ? "the function's bytes end before the patch is covered"
                                 : "undecodable instruction",
                    fn.address + off);
    }
    if (auto why = relocate_instruction(i, fn, off, off - *start, min_bytes, r)) {
      return *why;
    }
    off += i.ins.length;
    ++r.instructions;
  }
  r.length = off - *start;
  r.resume_address = r.patch_address + r.length;
  if (auto why = check_relocated_branches(dec, fn, *start, off, avail, r.resume_address)) {
    return *why;
  }
  if (auto why = check_branches_into(dec, fn, fn.address, r.resume_address)) {
    return *why;
  }
  return r;
}

}  // namespace profctl::probe
