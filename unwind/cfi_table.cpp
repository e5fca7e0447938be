// SPDX-License-Identifier: MIT
#include "unwind/cfi_table.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <gelf.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>

#include "unwind/cfi_program.h"

namespace profctl {
namespace {

constexpr unsigned kRegRbp = 6;
constexpr unsigned kRegRsp = 7;

// An FDE's rows before they join the table: [start, end) link-time addresses.
struct FdeRows {
  uint64_t start = 0;
  uint64_t end = 0;
  std::vector<std::pair<uint64_t, CfiRow>> rows;  // (link-time pc, rules), pc ascending
};

// The CIE fields an FDE needs, parsed once per CIE.
struct Cie {
  CfiCieInfo info;
  bool usable = false;
};

// The augmentation string and data of a CIE: which encoding the FDEs' addresses use,
// whether its FDEs are signal frames. Only the letters GCC, LLVM and the kernel's vDSO
// write are understood; any other makes the CIE unusable (its FDEs' layout is unknown).
bool parse_augmentation(const Dwarf_CIE& c, CfiCieInfo& out) {
  std::string_view aug = c.augmentation != nullptr ? c.augmentation : "";
  if (aug.size() > 16) {
    return false;
  }
  out.fde_encoding = DW_EH_PE_absptr;  // without 'R': .debug_frame's, and old .eh_frame's
  if (aug.empty()) {
    return true;
  }
  if (aug[0] != 'z') {
    return false;  // "eh" and other pre-'z' forms: data of unknown size follows
  }
  ByteReader r(c.augmentation_data, c.augmentation_data_size);
  for (char ch : aug.substr(1)) {
    switch (ch) {
      case 'L':
        r.u8();  // the LSDA's encoding; its pointer is in the FDE's augmentation data
        break;
      case 'P': {
        uint8_t enc = r.u8();
        if (!r.skip_encoded(enc)) {
          return false;
        }
        break;
      }
      case 'R':
        out.fde_encoding = r.u8();
        break;
      case 'S':
        out.signal_frame = true;
        break;
      case 'B':  // AArch64 BTI / MTE markers: no data
      case 'G':
        break;
      default:
        return false;
    }
  }
  return r.ok();
}

Cie parse_cie(const Dwarf_CIE& c, std::span<const uint8_t> section) {
  Cie out;
  const uint8_t* lo = section.data();
  const uint8_t* hi = section.data() + section.size();
  if (c.initial_instructions < lo || c.initial_instructions_end > hi ||
      c.initial_instructions > c.initial_instructions_end) {
    return out;
  }
  if (c.augmentation_data != nullptr &&
      (c.augmentation_data < lo || c.augmentation_data_size > size_t(hi - c.augmentation_data))) {
    return out;
  }
  out.info.code_align = c.code_alignment_factor;
  out.info.data_align = c.data_alignment_factor;
  out.info.ra_reg = c.return_address_register;
  out.info.initial = {c.initial_instructions,
                      size_t(c.initial_instructions_end - c.initial_instructions)};
  out.info.has_z = c.augmentation != nullptr && c.augmentation[0] == 'z';
  out.usable = out.info.code_align != 0 && parse_augmentation(c, out.info);
  return out;
}

// The rules of the registers a row holds, as a row. Anything else about the frame state
// makes the row not expressible.
CfiRow to_row(const CfiState& s, bool signal_frame) {
  CfiRow row;
  const auto not_expressible = [] {
    CfiRow r;
    r.cfa = CfaRule::kNotExpressible;
    r.ra = SavedRule::kUndefined;
    r.rbp = SavedRule::kUndefined;
    return r;
  };
  if (signal_frame || s.cfa_expression || (s.cfa_reg != kRegRsp && s.cfa_reg != kRegRbp) ||
      s.cfa_offset < INT32_MIN || s.cfa_offset > INT32_MAX) {
    return not_expressible();
  }
  row.cfa = s.cfa_reg == kRegRsp ? CfaRule::kRsp : CfaRule::kRbp;
  row.cfa_offset = static_cast<int32_t>(s.cfa_offset);
  // The caller's rsp is the CFA (the x86-64 psABI; libdw's default): any other rule for it
  // is beyond the table.
  const RegRule& sp = s.regs[CfiState::kSp];
  if (!(sp.kind == RegRule::kUnspecified || (sp.kind == RegRule::kValOffset && sp.offset == 0))) {
    return not_expressible();
  }
  const auto saved = [](const RegRule& r, bool is_ra, SavedRule& rule, int16_t& off) {
    switch (r.kind) {
      case RegRule::kOffset:
        if (r.offset < INT16_MIN || r.offset > INT16_MAX) {
          return false;
        }
        rule = SavedRule::kAtCfa;
        off = static_cast<int16_t>(r.offset);
        return true;
      case RegRule::kUndefined:
        rule = SavedRule::kUndefined;
        return true;
      case RegRule::kUnspecified:  // libdw's x86-64 ABI state: callee-saved rbp is kept
      case RegRule::kSameValue:
        rule = SavedRule::kSameValue;
        return !is_ra;
      default:
        return false;
    }
  };
  if (!saved(s.regs[CfiState::kRa], true, row.ra, row.ra_offset) ||
      !saved(s.regs[CfiState::kBp], false, row.rbp, row.rbp_offset)) {
    return not_expressible();
  }
  return row;
}

// Runs one FDE's program after its CIE's: the rows of [start, end).
std::optional<FdeRows> compile_fde(const Dwarf_FDE& f, const Cie& cie,
                                   std::span<const uint8_t> section, uint64_t section_vaddr) {
  const uint8_t* lo = section.data();
  if (f.start < lo || f.end > lo + section.size() || f.start > f.end) {
    return std::nullopt;
  }
  ByteReader r(f.start, size_t(f.end - f.start));
  r.set_vaddr(section_vaddr + uint64_t(f.start - lo));
  const uint8_t enc = cie.info.fde_encoding;
  auto start = r.encoded(enc);
  auto range = r.encoded(enc & 0x0f);  // a length: the format without the application
  if (!start || !range || !r.ok()) {
    return std::nullopt;
  }
  if (cie.info.has_z) {
    uint64_t n = r.uleb();
    if (!r.skip(n)) {
      return std::nullopt;
    }
  }
  FdeRows out;
  out.start = *start;
  out.end = *start + *range;
  if (out.end < out.start) {
    return std::nullopt;
  }
  CfiProgram prog(cie.info, kRegRsp, kRegRbp);
  auto emit = [&](uint64_t pc, const CfiState& s) {
    out.rows.emplace_back(pc, to_row(s, cie.info.signal_frame));
  };
  if (!prog.run_cie() || !prog.run_fde(r.rest(), r.vaddr(), out.start, out.end, emit)) {
    return std::nullopt;
  }
  return out;
}

// Every FDE of one section, compiled and appended to `out`; bad entries counted in `st`.
void compile_entries(std::span<const uint8_t> bytes, uint64_t section_vaddr, bool eh_frame,
                     CfiStats& st, std::vector<FdeRows>& out) {
  if (bytes.empty()) {
    return;
  }
  Elf_Data data{};
  data.d_buf = const_cast<uint8_t*>(bytes.data());  // NOLINT: libdw reads it only
  data.d_type = ELF_T_BYTE;
  data.d_size = bytes.size();
  unsigned char ident[EI_NIDENT] = {ELFMAG0,    ELFMAG1,     ELFMAG2,   ELFMAG3,
                                    ELFCLASS64, ELFDATA2LSB, EV_CURRENT};
  std::map<Dwarf_Off, Cie> cies;
  std::vector<std::pair<Dwarf_Off, Dwarf_FDE>> fdes;
  Dwarf_Off off = 0;
  // A section of n bytes holds fewer than n entries: bounds a parser that fails to advance.
  for (size_t guard = 0; guard <= bytes.size() && off < bytes.size(); ++guard) {
    Dwarf_Off next = 0;
    Dwarf_CFI_Entry e;
    int rc = dwarf_next_cfi(ident, &data, eh_frame, off, &next, &e);
    if (rc == 1) {
      break;
    }
    if (rc == 0 && dwarf_cfi_cie_p(&e)) {
      Cie c = parse_cie(e.cie, bytes);
      ++st.cies;
      st.malformed_cies += c.usable ? 0 : 1;
      cies.emplace(off, c);
    } else if (rc == 0) {
      fdes.emplace_back(e.fde.CIE_pointer, e.fde);
    } else {
      ++st.malformed_fdes;  // a CIE or an FDE: either way an entry lost
    }
    if (next == Dwarf_Off(-1) || next <= off) {
      break;
    }
    off = next;
  }
  for (const auto& [cie_off, fde] : fdes) {
    auto it = cies.find(cie_off);
    std::optional<FdeRows> rows;
    if (it != cies.end() && it->second.usable) {
      rows = compile_fde(fde, it->second, bytes, section_vaddr);
    }
    if (!rows) {
      ++st.malformed_fdes;
    } else if (rows->start == rows->end || rows->start == 0) {
      ++st.dropped_fdes;  // empty, or a discarded function's (address 0 in .debug_frame)
    } else {
      out.push_back(std::move(*rows));
    }
  }
}

}  // namespace

// Builds the table from compiled FDEs: sorted, overlaps cut (a later-starting FDE wins from
// its start, as a lookup through .eh_frame_hdr would find it), a kNone row after each FDE
// unless the next starts there, consecutive equal rules merged.
class CfiTableBuilder {
 public:
  static CfiTable build(std::vector<FdeRows> fdes, uint64_t base, CfiStats& st) {
    std::sort(fdes.begin(), fdes.end(), [](const FdeRows& a, const FdeRows& b) {
      return a.start != b.start ? a.start < b.start : a.end < b.end;
    });
    CfiTable t;
    t.base_ = base;
    const auto push = [&](uint64_t pc, const CfiRow& rules) {
      CfiRow row = rules;
      row.pc = static_cast<uint32_t>(pc - base);
      if (!t.rows_.empty() && t.rows_.back().pc == row.pc) {
        t.rows_.pop_back();  // the end of the FDE before, where this one starts
      }
      if (t.rows_.empty() || !t.rows_.back().same_rules(row)) {
        t.rows_.push_back(row);
      }
    };
    for (size_t i = 0; i < fdes.size(); ++i) {
      const FdeRows& f = fdes[i];
      if (f.start < base || f.end - base > UINT32_MAX) {
        ++st.dropped_fdes;
        continue;
      }
      uint64_t end = f.end;
      if (i + 1 < fdes.size() && fdes[i + 1].start < end) {
        end = fdes[i + 1].start;
      }
      if (end <= f.start) {
        ++st.dropped_fdes;  // the same start as the next: that one wins
        continue;
      }
      ++st.fdes;
      for (const auto& [pc, rules] : f.rows) {
        if (pc < end) {
          push(pc, rules);
          st.not_expressible_rows += rules.cfa == CfaRule::kNotExpressible ? 1 : 0;
        }
      }
      push(end, CfiRow{});  // kNone; replaced when the next FDE starts here
    }
    t.index();
    return t;
  }
};

CfiTable CfiTable::compile_section(std::span<const uint8_t> bytes, uint64_t section_vaddr,
                                   bool eh_frame, uint64_t base, CfiStats* stats) {
  CfiStats local;
  CfiStats& st = stats != nullptr ? *stats : local;
  std::vector<FdeRows> fdes;
  compile_entries(bytes, section_vaddr, eh_frame, st, fdes);
  return CfiTableBuilder::build(std::move(fdes), base, st);
}

Result<CfiTable> CfiTable::from_rows(uint64_t base, std::vector<CfiRow> rows) {
  for (size_t i = 0; i < rows.size(); ++i) {
    const CfiRow& r = rows[i];
    if (i > 0 && rows[i - 1].pc >= r.pc) {
      return Error{"CFI table rows not sorted at row " + std::to_string(i)};
    }
    if (r.cfa > CfaRule::kNotExpressible || r.ra > SavedRule::kAtCfa || r.rbp > SavedRule::kAtCfa ||
        r.reserved != 0) {
      return Error{"CFI table row " + std::to_string(i) + " has an unknown rule"};
    }
  }
  if (!rows.empty() && rows.back().cfa != CfaRule::kNone) {
    return Error{"CFI table does not end with an end row"};
  }
  if (rows.size() >= CfiTable::kBeforeFirst) {
    return Error{"CFI table too large"};
  }
  CfiTable t;
  t.base_ = base;
  t.rows_ = std::move(rows);
  t.index();
  return t;
}

// Blocks of 256 bytes (ORC's size: a few rows each), larger when the rows span so much
// that the index would pass 2^20 entries (4 MiB): a hostile table's span is up to 4 GiB.
void CfiTable::index() {
  block_first_.clear();
  if (rows_.empty()) {
    return;
  }
  const uint64_t span = uint64_t(rows_.back().pc) + 1;
  block_shift_ = 8;
  while ((span >> block_shift_) > (1u << 20)) {
    ++block_shift_;
  }
  const uint64_t blocks = (span >> block_shift_) + 1;
  block_first_.resize(blocks + 1);
  size_t next = 0;  // the first row starting after the current block's first address
  for (uint64_t b = 0; b <= blocks; ++b) {
    const uint64_t at = b << block_shift_;
    while (next < rows_.size() && rows_[next].pc <= at) {
      ++next;
    }
    const uint32_t row = next == 0 ? kBeforeFirst : uint32_t(next - 1);
    block_first_[b] = row;
  }
}

namespace {

// The bytes of section `name`, or empty (no such section, NOBITS, unreadable).
std::span<const uint8_t> section_bytes(Elf* elf, const char* name, uint64_t* vaddr) {
  size_t shstrndx = 0;
  if (elf_getshdrstrndx(elf, &shstrndx) != 0) {
    return {};
  }
  for (Elf_Scn* scn = elf_nextscn(elf, nullptr); scn != nullptr; scn = elf_nextscn(elf, scn)) {
    GElf_Shdr sh;
    if (gelf_getshdr(scn, &sh) == nullptr || sh.sh_type == SHT_NOBITS) {
      continue;
    }
    const char* n = elf_strptr(elf, shstrndx, sh.sh_name);
    if (n == nullptr || std::strcmp(n, name) != 0) {
      continue;
    }
    if ((sh.sh_flags & SHF_COMPRESSED) != 0 && elf_compress(scn, 0, 0) < 0) {
      return {};
    }
    Elf_Data* d = elf_getdata(scn, nullptr);
    if (d == nullptr || d->d_buf == nullptr) {
      return {};
    }
    *vaddr = sh.sh_addr;
    return {static_cast<const uint8_t*>(d->d_buf), d->d_size};
  }
  return {};
}

// .eh_frame of a file without section headers: PT_GNU_EH_FRAME's eh_frame_ptr, up to the
// end of the PT_LOAD holding it (the parser stops at the zero terminator before that).
std::span<const uint8_t> eh_frame_from_phdrs(Elf* elf, uint64_t* vaddr) {
  size_t n = 0;
  if (elf_getphdrnum(elf, &n) != 0) {
    return {};
  }
  std::optional<GElf_Phdr> hdr;
  std::vector<GElf_Phdr> loads;
  for (size_t i = 0; i < n; ++i) {
    GElf_Phdr ph;
    if (gelf_getphdr(elf, int(i), &ph) == nullptr) {
      continue;
    }
    if (ph.p_type == PT_GNU_EH_FRAME) {
      hdr = ph;
    } else if (ph.p_type == PT_LOAD) {
      loads.push_back(ph);
    }
  }
  if (!hdr || hdr->p_filesz < 8) {
    return {};
  }
  Elf_Data* h = elf_getdata_rawchunk(elf, int64_t(hdr->p_offset), 8, ELF_T_BYTE);
  if (h == nullptr) {
    return {};
  }
  ByteReader r(static_cast<const uint8_t*>(h->d_buf), h->d_size);
  r.set_vaddr(hdr->p_vaddr);
  uint8_t version = r.u8();
  uint8_t enc = r.u8();
  r.skip(2);
  auto at = r.encoded(enc);
  if (version != 1 || !at) {
    return {};
  }
  for (const GElf_Phdr& l : loads) {
    if (*at >= l.p_vaddr && *at - l.p_vaddr < l.p_filesz) {
      uint64_t off = l.p_offset + (*at - l.p_vaddr);
      uint64_t size = l.p_filesz - (*at - l.p_vaddr);
      Elf_Data* d = elf_getdata_rawchunk(elf, int64_t(off), size, ELF_T_BYTE);
      if (d == nullptr) {
        return {};
      }
      *vaddr = *at;
      return {static_cast<const uint8_t*>(d->d_buf), d->d_size};
    }
  }
  return {};
}

// The lowest PT_LOAD address: the table's base, so every pc of a module fits 32 bits.
uint64_t load_base(Elf* elf) {
  size_t n = 0;
  uint64_t base = UINT64_MAX;
  if (elf_getphdrnum(elf, &n) == 0) {
    for (size_t i = 0; i < n; ++i) {
      GElf_Phdr ph;
      if (gelf_getphdr(elf, int(i), &ph) != nullptr && ph.p_type == PT_LOAD) {
        base = std::min<uint64_t>(base, ph.p_vaddr);
      }
    }
  }
  return base == UINT64_MAX ? 0 : base;
}

}  // namespace

Result<CfiTable> CfiTable::compile(Elf* elf, CfiStats* stats) {
  CfiStats local;
  CfiStats& st = stats != nullptr ? *stats : local;
  GElf_Ehdr eh;
  if (elf == nullptr || elf_kind(elf) != ELF_K_ELF || gelf_getehdr(elf, &eh) == nullptr) {
    return Error{"not an ELF file"};
  }
  if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_ident[EI_DATA] != ELFDATA2LSB ||
      eh.e_machine != EM_X86_64) {
    return Error{"not an x86-64 ELF file"};
  }
  const uint64_t base = load_base(elf);
  std::vector<FdeRows> fdes;
  uint64_t vaddr = 0;
  std::span<const uint8_t> eh_frame = section_bytes(elf, ".eh_frame", &vaddr);
  if (eh_frame.empty()) {
    eh_frame = eh_frame_from_phdrs(elf, &vaddr);
  }
  compile_entries(eh_frame, vaddr, true, st, fdes);
  std::span<const uint8_t> debug_frame = section_bytes(elf, ".debug_frame", &vaddr);
  if (!debug_frame.empty()) {
    std::vector<std::pair<uint64_t, uint64_t>> covered;
    covered.reserve(fdes.size());
    for (const FdeRows& f : fdes) {
      covered.emplace_back(f.start, f.end);
    }
    std::sort(covered.begin(), covered.end());
    std::vector<FdeRows> extra;
    compile_entries(debug_frame, 0, false, st, extra);
    for (FdeRows& f : extra) {
      // Kept only where no .eh_frame FDE overlaps it: libdwfl asks .eh_frame first.
      auto it = std::lower_bound(covered.begin(), covered.end(), std::pair{f.end, uint64_t{0}});
      bool overlaps = it != covered.begin() && std::prev(it)->second > f.start;
      if (!overlaps) {
        ++st.debug_frame_fdes;
        fdes.push_back(std::move(f));
      }
    }
  }
  return CfiTableBuilder::build(std::move(fdes), base, st);
}

}  // namespace profctl
