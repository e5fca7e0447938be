// SPDX-License-Identifier: MIT
// The DWARF call frame instruction interpreter behind CfiTable (DWARF 5 section 6.4.2),
// for the three registers a CfiRow holds: rsp, rbp and the return address column. Bytes
// come from an untrusted file: ByteReader bounds every read, and a program that runs off
// its bytes, overflows, or uses an unknown opcode fails (its FDE is dropped).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>

namespace profctl {

// A bounded little-endian reader. A read past the end returns 0 and makes ok() false.
class ByteReader {
 public:
  ByteReader(const uint8_t* p, size_t n) : p_(p), end_(p + n) {}
  explicit ByteReader(std::span<const uint8_t> s) : ByteReader(s.data(), s.size()) {}

  bool ok() const { return ok_; }
  bool at_end() const { return p_ == end_; }
  std::span<const uint8_t> rest() const { return {p_, size_t(end_ - p_)}; }
  // The link-time address of the next byte, for pc-relative pointers.
  uint64_t vaddr() const { return vaddr_ + uint64_t(p_ - start_); }
  void set_vaddr(uint64_t v) {
    vaddr_ = v;
    start_ = p_;
  }

  uint8_t u8() { return uint8_t(fixed(1)); }
  uint64_t fixed(size_t n);  // n-byte unsigned, n <= 8
  uint64_t uleb();
  int64_t sleb();
  bool skip(uint64_t n);
  // A DW_EH_PE_* encoded pointer: absolute, or pc-relative to its own address. Other
  // applications (text/data/func-relative, indirect) are not found in x86-64 CFI: nullopt.
  std::optional<uint64_t> encoded(uint8_t enc);
  bool skip_encoded(uint8_t enc) { return encoded(enc & 0x0f).has_value(); }

 private:
  struct Leb {
    uint64_t bits = 0;
    unsigned shift = 0;  // bits read (0: malformed)
    uint8_t last = 0;    // the last byte, whose bit 6 is the sign of an SLEB128
  };
  Leb leb();
  bool fail() {
    ok_ = false;
    p_ = end_;
    return false;
  }
  const uint8_t* p_;
  const uint8_t* end_;
  const uint8_t* start_ = p_;
  uint64_t vaddr_ = 0;
  bool ok_ = true;
};

// What an FDE needs of its CIE.
struct CfiCieInfo {
  uint64_t code_align = 1;
  int64_t data_align = -8;
  uint64_t ra_reg = 16;
  uint8_t fde_encoding = 0;  // DW_EH_PE_absptr
  bool has_z = false;        // FDEs carry sized augmentation data
  bool signal_frame = false;
  std::span<const uint8_t> initial;  // the CIE's initial instructions
};

struct RegRule {
  enum Kind : uint8_t {
    kUnspecified,
    kUndefined,
    kSameValue,
    kOffset,     // saved at CFA + offset
    kValOffset,  // the value is CFA + offset
    kRegister,   // in another register
    kExpression,
    kValExpression,
  };
  Kind kind = kUnspecified;
  int64_t offset = 0;
  bool operator==(const RegRule&) const = default;
};

struct CfiState {
  enum Reg { kSp, kBp, kRa, kCount };
  static constexpr uint64_t kNoReg = UINT64_MAX;
  uint64_t cfa_reg = kNoReg;  // DWARF register; kNoReg until a def_cfa
  int64_t cfa_offset = 0;
  bool cfa_expression = false;
  RegRule regs[kCount];
};

class CfiProgram {
 public:
  // Called for each row: the state that holds from `pc` up to the next row's pc.
  using Emit = std::function<void(uint64_t pc, const CfiState&)>;

  CfiProgram(const CfiCieInfo& cie, unsigned sp_reg, unsigned bp_reg)
      : cie_(cie), sp_reg_(sp_reg), bp_reg_(bp_reg) {}
  // The CIE's initial instructions: the state every FDE row starts from.
  bool run_cie();
  // An FDE's instructions over [start, end); `vaddr` is the address of insns' first byte
  // (DW_CFA_set_loc may be pc-relative).
  bool run_fde(std::span<const uint8_t> insns, uint64_t vaddr, uint64_t start, uint64_t end,
               const Emit& emit);

 private:
  bool run(ByteReader& r, bool in_cie, uint64_t end, const Emit* emit);
  bool step(uint8_t op, ByteReader& r, bool in_cie, uint64_t end, const Emit* emit);
  bool advance(uint64_t delta, uint64_t end, const Emit* emit);
  bool set_rule(uint64_t reg, RegRule rule);
  int index(uint64_t reg) const;

  const CfiCieInfo& cie_;
  unsigned sp_reg_;
  unsigned bp_reg_;
  CfiState initial_;
  CfiState state_;
  uint64_t loc_ = 0;
  CfiState stack_[16];  // remember_state; deeper nesting is treated as malformed
  size_t depth_ = 0;
};

}  // namespace profctl
