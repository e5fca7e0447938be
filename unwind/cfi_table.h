// SPDX-License-Identifier: MIT
// CfiTable: one module's call frame information (.eh_frame, and .debug_frame for functions
// only it covers) compiled once into rows sorted by pc, each saying how to find the caller
// of a pc in that range from rsp and rbp alone: the CFA (rsp or rbp + offset), where the
// return address and rbp are saved. What a row cannot say (DWARF expressions, signal
// frames, a CFA on another register, a return address in a register) is marked "not
// expressible", so a walker stops there and libdwfl finishes the walk. The model is
// async-profiler's FrameDesc and Linux ORC: a walk costs a binary search and two loads per
// frame instead of interpreting CFI.
//
// The ELF is untrusted input (a target's file): every read is bounded, and a malformed CIE
// or FDE drops that entry only (counted in CfiStats), never the module.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.h"

typedef struct Elf Elf;  // NOLINT: libelf's C handle

namespace profctl {

enum class CfaRule : uint8_t {
  kNone = 0,        // no FDE covers this pc (a gap between functions, or past the last)
  kRsp = 1,         // CFA = rsp + cfa_offset
  kRbp = 2,         // CFA = rbp + cfa_offset
  kNotExpressible,  // the row needs more than this table holds: libdwfl must unwind it
};

// Where the caller's value of a register is, in the row's frame.
enum class SavedRule : uint8_t {
  kUndefined = 0,  // not recoverable (return address: the outermost frame)
  kSameValue = 1,  // unchanged by this frame (rbp only)
  kAtCfa = 2,      // in memory at CFA + offset
};

// 16 bytes; pc is relative to the table's base so that a row needs no 64-bit field.
// Rows marked kNone or kNotExpressible carry zero offsets and rules, so that identical
// rows compare equal and merge.
struct CfiRow {
  uint32_t pc = 0;  // first address (link-time, minus CfiTable::base()) the row applies to
  int32_t cfa_offset = 0;
  int16_t ra_offset = 0;   // CFA-relative, when ra == kAtCfa
  int16_t rbp_offset = 0;  // CFA-relative, when rbp == kAtCfa
  CfaRule cfa = CfaRule::kNone;
  SavedRule ra = SavedRule::kUndefined;
  SavedRule rbp = SavedRule::kSameValue;
  uint8_t reserved = 0;

  // Equal rules, whatever the pc: consecutive such rows merge into one.
  bool same_rules(const CfiRow& o) const {
    return cfa_offset == o.cfa_offset && ra_offset == o.ra_offset && rbp_offset == o.rbp_offset &&
           cfa == o.cfa && ra == o.ra && rbp == o.rbp && reserved == o.reserved;
  }
};
static_assert(sizeof(CfiRow) == 16);

// What compiling a module met: bad entries are counted, not fatal.
struct CfiStats {
  uint64_t cies = 0;
  uint64_t fdes = 0;              // FDEs compiled into rows
  uint64_t debug_frame_fdes = 0;  // of which from .debug_frame (no .eh_frame FDE there)
  uint64_t malformed_cies = 0;    // unusable CIE (and so its FDEs, counted below)
  uint64_t malformed_fdes = 0;    // bad encoding, opcode, bounds, or CIE: FDE dropped
  uint64_t dropped_fdes = 0;      // well-formed but unusable: empty, or outside the table's range
  uint64_t not_expressible_rows = 0;
};

class CfiTable {
 public:
  CfiTable() = default;

  // Compiles the CFI of an ELF file (the module's main file, or a separate debug file for
  // .debug_frame). An error only when the ELF itself cannot be read; a module without
  // CFI yields an empty table.
  static Result<CfiTable> compile(Elf* elf, CfiStats* stats = nullptr);

  // Compiles one raw CFI section (tests; modules without section headers): `bytes` loaded
  // at link-time address `section_vaddr`; `eh_frame` selects .eh_frame's format over
  // .debug_frame's. Little-endian ELFCLASS64. Rows outside [base, base + 4 GiB) are dropped.
  static CfiTable compile_section(std::span<const uint8_t> bytes, uint64_t section_vaddr,
                                  bool eh_frame, uint64_t base, CfiStats* stats = nullptr);

  // A table from rows read back (the disk cache): checked before use, since anyone who can
  // write the cache directory chose them. Rows must be sorted by strictly increasing pc,
  // every enum in range, and the last row kNone (nothing past the last function).
  static Result<CfiTable> from_rows(uint64_t base, std::vector<CfiRow> rows);

  // The row for link-time address `vaddr`; nullptr when no FDE covers it. The row may be
  // kNotExpressible. Two loads and a short scan: the block index names the row holding
  // each block's first address, as ORC's lookup table does, so a walk does not pay a
  // binary search's chain of dependent loads per frame.
  const CfiRow* find(uint64_t vaddr) const {
    if (vaddr < base_ || vaddr - base_ > UINT32_MAX || rows_.empty()) {
      return nullptr;
    }
    const auto rel = static_cast<uint32_t>(vaddr - base_);
    const size_t block = rel >> block_shift_;
    if (block + 1 >= block_first_.size()) {
      return nullptr;  // past the last row, which is always kNone
    }
    uint32_t i = block_first_[block];
    const uint32_t last = block_first_[block + 1];
    if (i == kBeforeFirst) {
      if (rel < rows_[0].pc) {
        return nullptr;
      }
      i = 0;
    }
    while (i < last && rows_[i + 1].pc <= rel) {
      ++i;
    }
    return rows_[i].cfa == CfaRule::kNone ? nullptr : &rows_[i];
  }

  uint64_t base() const { return base_; }
  std::span<const CfiRow> rows() const { return rows_; }
  // The block index find() uses (see block_first_), for a walker elsewhere (the probes'
  // tables in the target, probe_abi.h).
  std::span<const uint32_t> block_index() const { return block_first_; }
  unsigned block_shift() const { return block_shift_; }
  bool empty() const { return rows_.empty(); }

 private:
  static constexpr uint32_t kBeforeFirst = UINT32_MAX;
  void index();  // builds block_first_ from rows_

  uint64_t base_ = 0;
  std::vector<CfiRow> rows_;
  // For each block of 2^block_shift_ bytes from base_ (one more at the end): the index of the
  // row holding the block's first address, kBeforeFirst before the first row.
  std::vector<uint32_t> block_first_;
  unsigned block_shift_ = 8;
  friend class CfiTableBuilder;
};

}  // namespace profctl
