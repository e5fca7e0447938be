// SPDX-License-Identifier: MIT
#include "probe/alloc_nesting.h"

#include <Zydis/Zydis.h>

#include <vector>

#include "probe/x86_decoder.h"

namespace profctl::probe {
namespace {

constexpr uint64_t kWindow = 256;         // bytes read when a function's length is unknown
constexpr uint64_t kMaxFunction = 16384;  // bytes read of one function at most
constexpr size_t kPltStubBytes = 16;

// The targets of the direct calls and jumps of [entry, entry + len) that leave it.
std::vector<uint64_t> branch_targets(const ReadCode& read, uint64_t entry, uint64_t len) {
  const std::vector<uint8_t> code = read(entry, len);
  X86Decoder d;
  std::vector<uint64_t> out;
  for (size_t off = 0; off < code.size();) {
    Decoded i;
    if (!d.decode(std::span(code).subspan(off), i) || i.ins.mnemonic == ZYDIS_MNEMONIC_INT3) {
      break;  // not code, or the padding after the function
    }
    const ZydisDecodedOperand& op = i.ops[0];
    ZyanU64 t = 0;
    if ((i.ins.mnemonic == ZYDIS_MNEMONIC_CALL || i.ins.mnemonic == ZYDIS_MNEMONIC_JMP) &&
        op.type == ZYDIS_OPERAND_TYPE_IMMEDIATE && op.imm.is_relative &&
        ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&i.ins, &op, entry + off, &t)) &&
        (t < entry || t >= entry + len)) {
      out.push_back(t);
    }
    off += i.ins.length;
  }
  return out;
}

// The GOT slot a PLT stub jumps through: `[endbr64] [bnd] jmp qword [rip + d]`.
std::optional<uint64_t> plt_slot(const ReadCode& read, uint64_t stub) {
  const std::vector<uint8_t> code = read(stub, kPltStubBytes);
  X86Decoder d;
  size_t off = 0;
  for (int n = 0; n < 2 && off < code.size(); ++n) {
    Decoded i;
    if (!d.decode(std::span(code).subspan(off), i)) {
      return std::nullopt;
    }
    if (i.ins.mnemonic == ZYDIS_MNEMONIC_ENDBR64) {
      off += i.ins.length;
      continue;
    }
    const ZydisDecodedOperand& op = i.ops[0];
    ZyanU64 slot = 0;
    if (i.ins.mnemonic == ZYDIS_MNEMONIC_JMP && op.type == ZYDIS_OPERAND_TYPE_MEMORY &&
        op.mem.base == ZYDIS_REGISTER_RIP && op.mem.index == ZYDIS_REGISTER_NONE &&
        ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&i.ins, &op, stub + off, &slot))) {
      return slot;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

uint64_t length_of(const NestingScan& scan, uint64_t entry) {
  const uint64_t n = scan.length ? scan.length(entry) : 0;
  return n == 0 ? kWindow : std::min(n, kMaxFunction);
}

// Functions read per site at most: a module's code is the target's, and a function with
// thousands of calls must not make the install slow. Past it the site counts as not nesting.
constexpr int kMaxScans = 256;

struct Walk {
  uint64_t self;
  std::set<uint64_t> seen;  // functions scanned already
  int budget = kMaxScans;
};

bool scan_function(const NestingScan& scan, Walk& w, uint64_t entry, uint64_t len, int depth) {
  if (!w.seen.insert(entry).second || --w.budget < 0) {
    return false;
  }
  const uint64_t self = w.self;
  for (uint64_t t : branch_targets(scan.read, entry, len)) {
    if (t != self && scan.probed.contains(t)) {
      return true;
    }
    std::optional<uint64_t> next = t;  // where to look one level down
    if (t >= scan.module_lo && t < scan.module_hi) {
      if (auto slot = plt_slot(scan.read, t)) {
        auto it = scan.plt_slots.find(*slot);
        if (it == scan.plt_slots.end()) {
          continue;
        }
        if (scan.probed_names.contains(it->second)) {
          return true;
        }
        next = scan.defined ? scan.defined(it->second) : std::nullopt;
        if (next && *next != self && scan.probed.contains(*next)) {
          return true;  // another name of a probed function (tc_memalign is memalign)
        }
      }
    } else {
      next.reset();  // another module's function: not followed
    }
    if (next && depth > 0 && *next != self && *next >= scan.module_lo && *next < scan.module_hi &&
        scan_function(scan, w, *next, length_of(scan, *next), depth - 1)) {
      return true;
    }
  }
  return false;
}

}  // namespace

bool enters_probed(const NestingScan& scan, uint64_t entry, uint64_t size) {
  Walk w{entry, {}};
  return scan_function(scan, w, entry, size == 0 ? length_of(scan, entry) : size, 2);
}

}  // namespace profctl::probe
