// SPDX-License-Identifier: MIT
#include "unwind/cfi_program.h"

#include <dwarf.h>

namespace profctl {

uint64_t ByteReader::fixed(size_t n) {
  if (size_t(end_ - p_) < n) {
    fail();
    return 0;
  }
  uint64_t v = 0;
  for (size_t i = 0; i < n; ++i) {
    v |= uint64_t(p_[i]) << (8 * i);
  }
  p_ += n;
  return v;
}

// One LEB128 value: its bits, and the shift after its last byte and that byte (0 when it is
// malformed: past the end, or more than 10 bytes, which no 64-bit value needs).
ByteReader::Leb ByteReader::leb() {
  uint64_t v = 0;
  for (unsigned shift = 0; shift < 70; shift += 7) {
    if (p_ == end_) {
      break;
    }
    const uint8_t b = *p_++;
    if (shift < 64) {
      v |= uint64_t(b & 0x7f) << shift;
    }
    if ((b & 0x80) == 0) {
      return {v, shift + 7, b};
    }
  }
  fail();
  return {};
}

uint64_t ByteReader::uleb() { return leb().bits; }

int64_t ByteReader::sleb() {
  const Leb l = leb();
  uint64_t v = l.bits;
  if (l.shift != 0 && l.shift < 64 && (l.last & 0x40) != 0) {
    v |= ~uint64_t(0) << l.shift;  // sign-extend from the last byte's sign bit
  }
  return int64_t(v);
}

bool ByteReader::skip(uint64_t n) {
  if (uint64_t(end_ - p_) < n) {
    return fail();
  }
  p_ += n;
  return true;
}

std::optional<uint64_t> ByteReader::encoded(uint8_t enc) {
  if (enc == DW_EH_PE_omit) {
    return std::nullopt;
  }
  const uint64_t field = vaddr();
  uint64_t v = 0;
  switch (enc & 0x0f) {
    case DW_EH_PE_absptr:
    case DW_EH_PE_udata8:
    case DW_EH_PE_sdata8:
      v = fixed(8);
      break;
    case DW_EH_PE_uleb128:
      v = uleb();
      break;
    case DW_EH_PE_udata2:
      v = fixed(2);
      break;
    case DW_EH_PE_udata4:
      v = fixed(4);
      break;
    case DW_EH_PE_sleb128:
      v = uint64_t(sleb());
      break;
    case DW_EH_PE_sdata2:
      v = uint64_t(int64_t(int16_t(fixed(2))));
      break;
    case DW_EH_PE_sdata4:
      v = uint64_t(int64_t(int32_t(fixed(4))));
      break;
    default:
      fail();
      return std::nullopt;
  }
  if (!ok_) {
    return std::nullopt;
  }
  switch (enc & 0xf0) {
    case DW_EH_PE_absptr:
      return v;
    case DW_EH_PE_pcrel:
      return v + field;  // wraps like the linker's arithmetic
    default:
      return std::nullopt;
  }
}

int CfiProgram::index(uint64_t reg) const {
  if (reg == cie_.ra_reg) {
    return CfiState::kRa;
  }
  if (reg == sp_reg_) {
    return CfiState::kSp;
  }
  if (reg == bp_reg_) {
    return CfiState::kBp;
  }
  return -1;  // a register no row holds: its rule does not matter
}

bool CfiProgram::set_rule(uint64_t reg, RegRule rule) {
  if (int i = index(reg); i >= 0) {
    state_.regs[i] = rule;
  }
  return true;
}

bool CfiProgram::run_cie() {
  ByteReader r(cie_.initial);
  state_ = CfiState{};
  initial_ = state_;
  if (!run(r, true, UINT64_MAX, nullptr)) {
    return false;
  }
  initial_ = state_;
  return true;
}

bool CfiProgram::run_fde(std::span<const uint8_t> insns, uint64_t vaddr, uint64_t start,
                         uint64_t end, const Emit& emit) {
  ByteReader r(insns);
  r.set_vaddr(vaddr);
  state_ = initial_;
  depth_ = 0;
  loc_ = start;
  if (!run(r, false, end, &emit)) {
    return false;
  }
  if (loc_ < end) {
    emit(loc_, state_);
  }
  return true;
}

bool CfiProgram::run(ByteReader& r, bool in_cie, uint64_t end, const Emit* emit) {
  while (!r.at_end()) {
    uint8_t op = r.u8();
    if (!step(op, r, in_cie, end, emit) || !r.ok()) {
      return false;
    }
  }
  return r.ok();
}

// The state so far holds from loc_ up to the new location: one row.
bool CfiProgram::advance(uint64_t delta, uint64_t end, const Emit* emit) {
  uint64_t step = 0;
  if (__builtin_mul_overflow(delta, cie_.code_align, &step)) {
    return false;
  }
  uint64_t next = 0;
  if (__builtin_add_overflow(loc_, step, &next)) {
    return false;
  }
  if (emit != nullptr && next > loc_ && loc_ < end) {
    (*emit)(loc_, state_);
  }
  loc_ = next;
  return true;
}

// One instruction (opcode `op` already read). Why each case is as it is: DWARF 5 6.4.2.
// Longer than our functions should be: one short case per DW_CFA opcode, kept in one switch
// so that it reads against the standard's table and no opcode can be missed.
bool CfiProgram::step(uint8_t op, ByteReader& r, bool in_cie, uint64_t end, const Emit* emit) {
  const auto factored = [&](uint64_t n, int64_t* out) {
    return !__builtin_mul_overflow(int64_t(n), cie_.data_align, out) && int64_t(n) >= 0;
  };
  const auto sfactored = [&](int64_t n, int64_t* out) {
    return !__builtin_mul_overflow(n, cie_.data_align, out);
  };
  int64_t off = 0;
  switch (op >> 6) {
    case 1:  // DW_CFA_advance_loc
      return !in_cie && advance(op & 0x3f, end, emit);
    case 2:  // DW_CFA_offset
      return factored(r.uleb(), &off) && set_rule(op & 0x3f, {RegRule::kOffset, off});
    case 3:  // DW_CFA_restore
      if (int i = index(op & 0x3f); i >= 0) {
        state_.regs[i] = initial_.regs[i];
      }
      return true;
    default:
      break;
  }
  switch (op) {
    case DW_CFA_nop:
      return true;
    case DW_CFA_set_loc: {
      if (in_cie) {
        return false;
      }
      auto to = r.encoded(cie_.fde_encoding);
      return to && *to >= loc_ && advance(*to - loc_, end, emit);
    }
    case DW_CFA_advance_loc1:
      return !in_cie && advance(r.fixed(1), end, emit);
    case DW_CFA_advance_loc2:
      return !in_cie && advance(r.fixed(2), end, emit);
    case DW_CFA_advance_loc4:
      return !in_cie && advance(r.fixed(4), end, emit);
    case DW_CFA_MIPS_advance_loc8:
      return !in_cie && advance(r.fixed(8), end, emit);
    case DW_CFA_offset_extended: {
      uint64_t reg = r.uleb();
      return factored(r.uleb(), &off) && set_rule(reg, {RegRule::kOffset, off});
    }
    case DW_CFA_offset_extended_sf: {
      uint64_t reg = r.uleb();
      return sfactored(r.sleb(), &off) && set_rule(reg, {RegRule::kOffset, off});
    }
    case DW_CFA_GNU_negative_offset_extended: {
      uint64_t reg = r.uleb();
      return factored(r.uleb(), &off) && set_rule(reg, {RegRule::kOffset, -off});
    }
    case DW_CFA_val_offset: {
      uint64_t reg = r.uleb();
      return factored(r.uleb(), &off) && set_rule(reg, {RegRule::kValOffset, off});
    }
    case DW_CFA_val_offset_sf: {
      uint64_t reg = r.uleb();
      return sfactored(r.sleb(), &off) && set_rule(reg, {RegRule::kValOffset, off});
    }
    case DW_CFA_restore_extended:
      if (int i = index(r.uleb()); i >= 0) {
        state_.regs[i] = initial_.regs[i];
      }
      return true;
    case DW_CFA_undefined:
      return set_rule(r.uleb(), {RegRule::kUndefined, 0});
    case DW_CFA_same_value:
      return set_rule(r.uleb(), {RegRule::kSameValue, 0});
    case DW_CFA_register: {
      uint64_t reg = r.uleb();
      return set_rule(reg, {RegRule::kRegister, int64_t(r.uleb() & INT64_MAX)});
    }
    case DW_CFA_remember_state:
      if (depth_ == std::size(stack_)) {
        return false;
      }
      stack_[depth_++] = state_;  // with the CFA rule, as libdw and libgcc keep it
      return true;
    case DW_CFA_restore_state:
      if (depth_ == 0) {
        return false;
      }
      state_ = stack_[--depth_];
      return true;
    case DW_CFA_def_cfa:
      state_.cfa_reg = r.uleb();
      state_.cfa_offset = int64_t(r.uleb() & INT64_MAX);
      state_.cfa_expression = false;
      return true;
    case DW_CFA_def_cfa_sf:
      state_.cfa_reg = r.uleb();
      state_.cfa_expression = false;
      return sfactored(r.sleb(), &state_.cfa_offset);
    case DW_CFA_def_cfa_register:
      state_.cfa_reg = r.uleb();  // after an expression the row stays not expressible
      return true;
    case DW_CFA_def_cfa_offset:
      state_.cfa_offset = int64_t(r.uleb() & INT64_MAX);
      return true;
    case DW_CFA_def_cfa_offset_sf:
      return sfactored(r.sleb(), &state_.cfa_offset);
    case DW_CFA_def_cfa_expression:
      state_.cfa_expression = true;
      return r.skip(r.uleb());
    case DW_CFA_expression:
    case DW_CFA_val_expression: {
      uint64_t reg = r.uleb();
      auto kind = op == DW_CFA_expression ? RegRule::kExpression : RegRule::kValExpression;
      return r.skip(r.uleb()) && set_rule(reg, {kind, 0});
    }
    case DW_CFA_GNU_args_size:
      r.uleb();  // the callee's pushed arguments: the CFA rule already accounts for them
      return true;
    default:
      return false;  // unknown, or another architecture's (GNU_window_save): unusable
  }
}

}  // namespace profctl
