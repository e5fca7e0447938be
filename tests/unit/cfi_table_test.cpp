// SPDX-License-Identifier: MIT
// CfiTable against libdw: for every FDE of libc, libstdc++, ld.so and the test binaries, at
// each row's first pc and a few inside it, the table's CFA rule and the places of the
// return address and rbp equal what dwarf_cfi_addrframe, dwarf_frame_cfa and
// dwarf_frame_register say; where libdw's answer is beyond a row (an expression, a
// register), the table says "not expressible". Then malformed CFI bytes.
#include "unwind/cfi_table.h"

#include <dwarf.h>
#include <elfutils/libdw.h>
#include <fcntl.h>
#include <gelf.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "base/eh_frame_hdr.h"

namespace profctl {
namespace {

// An ELF file opened read-only, closed on every path.
class ElfFile {
 public:
  explicit ElfFile(const std::string& path) {
    elf_version(EV_CURRENT);
    fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ >= 0) {
      elf_ = elf_begin(fd_, ELF_C_READ_MMAP, nullptr);
    }
  }
  ~ElfFile() {
    if (dwarf_ != nullptr) {
      dwarf_end(dwarf_);
    }
    if (elf_ != nullptr) {
      elf_end(elf_);
    }
    if (fd_ >= 0) {
      close(fd_);
    }
  }
  ElfFile(const ElfFile&) = delete;
  ElfFile& operator=(const ElfFile&) = delete;
  Elf* elf() const { return elf_; }
  // .debug_frame's CFI, through a Dwarf session (nullptr when the file has none).
  Dwarf_CFI* debug_cfi() {
    if (dwarf_ == nullptr) {
      dwarf_ = dwarf_begin_elf(elf_, DWARF_C_READ, nullptr);
    }
    return dwarf_ != nullptr ? dwarf_getcfi(dwarf_) : nullptr;
  }

 private:
  int fd_ = -1;
  Elf* elf_ = nullptr;
  Dwarf* dwarf_ = nullptr;
};

// libdw's answer for one register, in a row's terms; `expressible` false when a row
// cannot hold it.
struct Rule {
  bool expressible = true;
  SavedRule rule = SavedRule::kUndefined;
  int64_t offset = 0;
};

Rule libdw_register(Dwarf_Frame* frame, int reg) {
  Dwarf_Op mem[3];
  Dwarf_Op* ops = nullptr;
  size_t nops = 0;
  Rule r;
  if (dwarf_frame_register(frame, reg, mem, &ops, &nops) != 0) {
    r.expressible = false;
  } else if (nops == 0) {
    r.rule = ops == nullptr ? SavedRule::kSameValue : SavedRule::kUndefined;
  } else if (ops[0].atom == DW_OP_call_frame_cfa && nops <= 2 &&
             (nops == 1 || ops[1].atom == DW_OP_plus_uconst)) {
    r.rule = SavedRule::kAtCfa;
    r.offset = nops == 2 ? static_cast<int64_t>(ops[1].number) : 0;
  } else {
    r.expressible = false;  // a value (stack_value), a register, an expression
  }
  return r;
}

// Whether rsp's rule is "the CFA itself", the only one a row carries.
bool libdw_sp_is_cfa(Dwarf_Frame* frame) {
  Dwarf_Op mem[3];
  Dwarf_Op* ops = nullptr;
  size_t nops = 0;
  if (dwarf_frame_register(frame, 7, mem, &ops, &nops) != 0) {
    return false;
  }
  return nops == 2 && ops[0].atom == DW_OP_call_frame_cfa && ops[1].atom == DW_OP_stack_value;
}

struct Tally {
  uint64_t checked = 0;
  uint64_t not_expressible = 0;
  uint64_t no_row = 0;
};

// The table at `pc` against libdw (.eh_frame first, then .debug_frame, as libdwfl asks).
void check_pc(const CfiTable& t, Dwarf_CFI* eh, Dwarf_CFI* dbg, uint64_t pc,
              const std::string& what, Tally& tally) {
  Dwarf_Frame* frame = nullptr;
  if ((eh == nullptr || dwarf_cfi_addrframe(eh, pc, &frame) != 0) &&
      (dbg == nullptr || dwarf_cfi_addrframe(dbg, pc, &frame) != 0)) {
    frame = nullptr;
  }
  const CfiRow* row = t.find(pc);
  ++tally.checked;
  std::string where = what + " pc 0x" + [&] {
    char b[32];
    snprintf(b, sizeof b, "%llx", static_cast<unsigned long long>(pc));
    return std::string(b);
  }();
  if (frame == nullptr) {
    EXPECT_EQ(row, nullptr) << where << ": libdw has no frame, the table has a row";
    ++tally.no_row;
    return;
  }
  ASSERT_NE(row, nullptr) << where << ": libdw has a frame, the table none";
  bool signal = false;
  int ra_reg = dwarf_frame_info(frame, nullptr, nullptr, &signal);
  Dwarf_Op* cfa_ops = nullptr;
  size_t cfa_nops = 0;
  // libdw states a register + offset CFA as one DW_OP_bregx (register, offset).
  bool cfa_ok = dwarf_frame_cfa(frame, &cfa_ops, &cfa_nops) == 0 && cfa_nops == 1 &&
                cfa_ops[0].atom == DW_OP_bregx &&
                (cfa_ops[0].number == 7 || cfa_ops[0].number == 6);
  Rule ra = libdw_register(frame, ra_reg);
  Rule bp = libdw_register(frame, 6);
  bool expressible = !signal && cfa_ok && ra_reg == 16 && libdw_sp_is_cfa(frame) &&
                     ra.expressible && ra.rule != SavedRule::kSameValue && bp.expressible;
  if (!expressible) {
    EXPECT_EQ(row->cfa, CfaRule::kNotExpressible)
        << where << ": libdw's rule is beyond a row (signal " << signal << ", cfa " << cfa_ok
        << ", ra reg " << ra_reg << ", sp is cfa " << libdw_sp_is_cfa(frame) << ", ra "
        << ra.expressible << "/" << int(ra.rule) << ", rbp " << bp.expressible << ")";
    ++tally.not_expressible;
  } else {
    EXPECT_NE(row->cfa, CfaRule::kNotExpressible)
        << where << ": a simple rule marked not expressible";
    if (row->cfa != CfaRule::kNotExpressible) {
      EXPECT_EQ(row->cfa, cfa_ops[0].number == 7 ? CfaRule::kRsp : CfaRule::kRbp) << where;
      EXPECT_EQ(row->cfa_offset, static_cast<int64_t>(cfa_ops[0].number2)) << where;
      EXPECT_EQ(row->ra, ra.rule) << where;
      if (ra.rule == SavedRule::kAtCfa) {
        EXPECT_EQ(row->ra_offset, ra.offset) << where;
      }
      EXPECT_EQ(row->rbp, bp.rule) << where;
      if (bp.rule == SavedRule::kAtCfa) {
        EXPECT_EQ(row->rbp_offset, bp.offset) << where;
      }
    }
  }
  free(frame);  // NOLINT: libdw mallocs it
}

// Every FDE start (from .eh_frame_hdr) and every row: its first pc, the one after, its
// middle and its last.
void check_file(const std::string& path, uint64_t min_fdes) {
  SCOPED_TRACE(path);
  if (access(path.c_str(), R_OK) != 0) {
    GTEST_SKIP() << path << " not found";
  }
  ElfFile f(path);
  ASSERT_NE(f.elf(), nullptr);
  CfiStats st;
  auto t = CfiTable::compile(f.elf(), &st);
  ASSERT_TRUE(t.ok()) << t.error().message();
  EXPECT_EQ(st.malformed_fdes, 0u);
  EXPECT_EQ(st.malformed_cies, 0u);
  EXPECT_GE(st.fdes, min_fdes);
  Dwarf_CFI* eh = dwarf_getcfi_elf(f.elf());
  Dwarf_CFI* dbg = f.debug_cfi();
  Tally tally;
  // The FDE starts .eh_frame_hdr lists: none may be missing from the table.
  size_t nph = 0;
  ASSERT_EQ(elf_getphdrnum(f.elf(), &nph), 0);
  for (size_t i = 0; i < nph; ++i) {
    GElf_Phdr ph;
    if (gelf_getphdr(f.elf(), int(i), &ph) == nullptr || ph.p_type != PT_GNU_EH_FRAME) {
      continue;
    }
    Elf_Data* d = elf_getdata_rawchunk(f.elf(), int64_t(ph.p_offset), ph.p_filesz, ELF_T_BYTE);
    ASSERT_NE(d, nullptr);
    auto starts = parse_eh_frame_hdr(
        std::string_view(static_cast<const char*>(d->d_buf), d->d_size), ph.p_vaddr);
    EXPECT_GE(starts.size(), min_fdes);
    for (uint64_t s : starts) {
      check_pc(*t, eh, dbg, s, "FDE start", tally);
    }
  }
  auto rows = t->rows();
  for (size_t i = 0; i + 1 < rows.size(); ++i) {
    uint64_t a = t->base() + rows[i].pc;
    uint64_t b = t->base() + rows[i + 1].pc;  // exclusive
    for (uint64_t pc : {a, a + 1, a + (b - a) / 2, b - 1}) {
      if (pc < b) {
        check_pc(*t, eh, dbg, pc, "row", tally);
      }
    }
  }
  // Just past the last row: nothing.
  if (!rows.empty()) {
    EXPECT_EQ(t->find(t->base() + rows.back().pc), nullptr);
  }
  EXPECT_GT(tally.checked, min_fdes);
  std::printf(
      "  %s: %zu rows, %llu FDEs (%llu .debug_frame), %llu pcs checked, %llu not "
      "expressible, %llu without CFI\n",
      path.c_str(), rows.size(), (unsigned long long)st.fdes,
      (unsigned long long)st.debug_frame_fdes, (unsigned long long)tally.checked,
      (unsigned long long)tally.not_expressible, (unsigned long long)tally.no_row);
}

TEST(CfiTable, LibcMatchesLibdw) { check_file("/lib/x86_64-linux-gnu/libc.so.6", 1000); }
TEST(CfiTable, LibstdcxxMatchesLibdw) { check_file("/lib/x86_64-linux-gnu/libstdc++.so.6", 1000); }
TEST(CfiTable, LdSoMatchesLibdw) { check_file("/lib64/ld-linux-x86-64.so.2", 100); }
TEST(CfiTable, TestTargetsMatchLibdw) {
  for (const char* p : {CFI_STACK_TARGET_CFI, CFI_STACK_TARGET_FP, CFI_STACK_TARGET_NOPIE,
                        CFI_SIGNALS_TARGET, PLT_TARGET_PATH, SYMFIX_PATH, SYMFIX_FP_PATH}) {
    check_file(p, 2);
  }
}

// Go writes .debug_frame only (no .eh_frame): the table is compiled from it.
TEST(CfiTable, GoDebugFrameMatchesLibdw) {
  if (std::string(CFI_GO_TARGET).empty()) {
    GTEST_SKIP() << "go_target not built (no go toolchain)";
  }
  check_file(CFI_GO_TARGET, 1000);
}

// symfix_nocfi has neither .eh_frame nor .debug_frame: an empty table, not an error.
TEST(CfiTable, NoCfiIsAnEmptyTable) {
  ElfFile f(SYMFIX_NOCFI_PATH);
  ASSERT_NE(f.elf(), nullptr);
  auto t = CfiTable::compile(f.elf());
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->find(0x1000), nullptr);
}

}  // namespace
}  // namespace profctl

namespace profctl {
namespace {

// Builds .eh_frame bytes: CIEs ("zR", FDE addresses pc-relative sdata4, code alignment 1,
// data alignment -8, return address column 16) and FDEs, at link-time address kSection.
constexpr uint64_t kSection = 0x1000;

class EhFrame {
 public:
  size_t cie(const std::vector<uint8_t>& insns, const std::string& aug = "zR") {
    size_t at = begin();
    u32(0);  // CIE id
    b_.push_back(1);
    b_.insert(b_.end(), aug.begin(), aug.end());
    b_.push_back(0);
    b_.push_back(1);     // code alignment
    b_.push_back(0x78);  // data alignment -8
    b_.push_back(16);    // return address column
    if (aug.find('R') != std::string::npos) {
      b_.push_back(1);     // augmentation data size
      b_.push_back(0x1b);  // DW_EH_PE_pcrel | DW_EH_PE_sdata4
    } else if (aug == "z") {
      b_.push_back(0);
    }
    b_.insert(b_.end(), insns.begin(), insns.end());
    finish(at);
    return at;
  }
  void fde(size_t cie_at, uint64_t start, uint32_t len, const std::vector<uint8_t>& insns) {
    size_t at = begin();
    u32(uint32_t(b_.size() - cie_at));
    u32(uint32_t(int32_t(start - (kSection + b_.size()))));
    u32(len);
    b_.push_back(0);  // augmentation data size
    b_.insert(b_.end(), insns.begin(), insns.end());
    finish(at);
  }
  std::vector<uint8_t> bytes() const {
    auto out = b_;
    out.insert(out.end(), 4, 0);  // terminator
    return out;
  }
  std::vector<uint8_t>& raw() { return b_; }

 private:
  size_t begin() {
    size_t at = b_.size();
    u32(0);  // length, patched by finish()
    return at;
  }
  void finish(size_t at) {
    uint32_t len = uint32_t(b_.size() - at - 4);
    std::memcpy(b_.data() + at, &len, 4);
  }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) {
      b_.push_back(uint8_t(v >> (8 * i)));
    }
  }
  std::vector<uint8_t> b_;
};

// def_cfa rsp+8; return address at CFA-8: every x86-64 CIE.
const std::vector<uint8_t> kCieInsns = {DW_CFA_def_cfa, 7, 8, DW_CFA_offset | 16, 1};
// push rbp; mov rbp, rsp; ...: CFA rsp+16 and rbp at CFA-16 after 1 byte, CFA on rbp after 4.
const std::vector<uint8_t> kPushRbp = {
    DW_CFA_advance_loc | 1, DW_CFA_def_cfa_offset,   16, DW_CFA_offset | 6, 2,
    DW_CFA_advance_loc | 3, DW_CFA_def_cfa_register, 6};

CfiTable compile(const EhFrame& e, CfiStats* st) {
  auto b = e.bytes();
  return CfiTable::compile_section(b, kSection, true, 0, st);
}

TEST(CfiTableBytes, WellFormedRows) {
  EhFrame e;
  size_t c = e.cie(kCieInsns);
  e.fde(c, 0x2000, 0x20, kPushRbp);
  CfiStats st;
  CfiTable t = compile(e, &st);
  EXPECT_EQ(st.fdes, 1u);
  EXPECT_EQ(st.malformed_fdes, 0u);
  const CfiRow* r = t.find(0x2000);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->cfa, CfaRule::kRsp);
  EXPECT_EQ(r->cfa_offset, 8);
  EXPECT_EQ(r->ra, SavedRule::kAtCfa);
  EXPECT_EQ(r->ra_offset, -8);
  EXPECT_EQ(r->rbp, SavedRule::kSameValue);
  r = t.find(0x2003);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->cfa_offset, 16);
  EXPECT_EQ(r->rbp, SavedRule::kAtCfa);
  EXPECT_EQ(r->rbp_offset, -16);
  r = t.find(0x201f);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->cfa, CfaRule::kRbp);
  EXPECT_EQ(r->cfa_offset, 16);
  EXPECT_EQ(t.find(0x1fff), nullptr);
  EXPECT_EQ(t.find(0x2020), nullptr);
  EXPECT_EQ(t.rows().size(), 4u);  // three rule rows and the end
}

TEST(CfiTableBytes, IdenticalRowsMerge) {
  EhFrame e;
  size_t c = e.cie(kCieInsns);
  // Two FDEs back to back with the same rules, and a row that changes nothing.
  e.fde(c, 0x2000, 0x10, {DW_CFA_advance_loc | 4, DW_CFA_nop, DW_CFA_def_cfa_offset, 8});
  e.fde(c, 0x2010, 0x10, {});
  CfiTable t = compile(e, nullptr);
  ASSERT_EQ(t.rows().size(), 2u);
  EXPECT_EQ(t.rows()[1].cfa, CfaRule::kNone);
  EXPECT_EQ(t.rows()[1].pc, 0x2020u);
}

TEST(CfiTableBytes, RulesBeyondARowAreNotExpressible) {
  EhFrame e;
  size_t c = e.cie(kCieInsns);
  size_t sig = e.cie(kCieInsns, "zRS");
  // CFA as an expression (PLT stubs), on r10 (stack realignment), RA in a register,
  // rbp as an expression; then a signal frame.
  e.fde(c, 0x2000, 0x10, {DW_CFA_def_cfa_expression, 1, DW_OP_lit0});
  e.fde(c, 0x2010, 0x10, {DW_CFA_def_cfa, 10, 0});
  e.fde(c, 0x2020, 0x10, {DW_CFA_register, 16, 3});
  e.fde(c, 0x2030, 0x10, {DW_CFA_expression, 6, 1, DW_OP_lit0});
  e.fde(sig, 0x2040, 0x10, {});
  e.fde(c, 0x2050, 0x10, {DW_CFA_undefined, 16});  // _start: the outermost frame
  CfiStats st;
  CfiTable t = compile(e, &st);
  EXPECT_EQ(st.fdes, 6u);
  for (uint64_t pc : {0x2000, 0x2010, 0x2020, 0x2030, 0x2040}) {
    const CfiRow* r = t.find(pc + 5);
    ASSERT_NE(r, nullptr) << pc;
    EXPECT_EQ(r->cfa, CfaRule::kNotExpressible) << std::hex << pc;
  }
  const CfiRow* r = t.find(0x2050);
  ASSERT_NE(r, nullptr);
  EXPECT_EQ(r->cfa, CfaRule::kRsp);
  EXPECT_EQ(r->ra, SavedRule::kUndefined);
}

TEST(CfiTableBytes, RememberAndRestoreState) {
  EhFrame e;
  size_t c = e.cie(kCieInsns);
  // push; remember; (epilogue) pop -> CFA rsp+8; restore -> back to rsp+16.
  e.fde(c, 0x2000, 0x10,
        {DW_CFA_advance_loc | 1, DW_CFA_def_cfa_offset, 16, DW_CFA_remember_state,
         DW_CFA_advance_loc | 2, DW_CFA_def_cfa_offset, 8, DW_CFA_advance_loc | 1,
         DW_CFA_restore_state});
  CfiTable t = compile(e, nullptr);
  EXPECT_EQ(t.find(0x2001)->cfa_offset, 16);
  EXPECT_EQ(t.find(0x2003)->cfa_offset, 8);
  EXPECT_EQ(t.find(0x2004)->cfa_offset, 16);
}

// Each malformed FDE is dropped and counted; the good FDE beside it stays.
TEST(CfiTableBytes, MalformedFdesAreDroppedAndCounted) {
  const std::vector<std::vector<uint8_t>> bad = {
      {0x3f},                                        // unknown opcode
      {DW_CFA_restore_state},                        // nothing remembered
      {DW_CFA_def_cfa, 7},                           // operand missing
      {DW_CFA_advance_loc4, 0xff, 0xff},             // operand cut
      {DW_CFA_def_cfa_expression, 100, DW_OP_lit0},  // block past the end
      {DW_CFA_offset_extended, 16, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
       0x01},  // LEB128 of 11 bytes
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    EhFrame e;
    size_t c = e.cie(kCieInsns);
    e.fde(c, 0x2000, 0x10, bad[i]);
    e.fde(c, 0x3000, 0x10, {});
    CfiStats st;
    CfiTable t = compile(e, &st);
    EXPECT_EQ(st.malformed_fdes, 1u) << "case " << i;
    EXPECT_EQ(st.fdes, 1u) << "case " << i;
    EXPECT_EQ(t.find(0x2000), nullptr) << "case " << i;
    EXPECT_NE(t.find(0x3000), nullptr) << "case " << i;
  }
  // Seventeen nested remember_states: deeper than the interpreter keeps.
  EhFrame deep;
  size_t c = deep.cie(kCieInsns);
  deep.fde(c, 0x2000, 0x10, std::vector<uint8_t>(17, DW_CFA_remember_state));
  CfiStats st;
  compile(deep, &st);
  EXPECT_EQ(st.malformed_fdes, 1u);
  // A CIE with an augmentation nobody writes: its FDEs cannot be read (libdw refuses the
  // CIE, so its FDE finds none).
  EhFrame odd;
  c = odd.cie(kCieInsns, "zQ");
  odd.fde(c, 0x2000, 0x10, {});
  st = {};
  CfiTable t = compile(odd, &st);
  EXPECT_GE(st.malformed_cies + st.malformed_fdes, 1u);
  EXPECT_EQ(st.fdes, 0u);
  EXPECT_EQ(t.find(0x2000), nullptr);
  // An FDE whose length runs past the section.
  EhFrame longer;
  c = longer.cie(kCieInsns);
  longer.fde(c, 0x2000, 0x10, {});
  const size_t fde_at = c + 4 + longer.raw()[c];  // after the CIE's length and body
  longer.raw()[fde_at + 1] = 0xff;                // the FDE's length: 0xff00 + its own
  st = {};
  t = compile(longer, &st);
  EXPECT_GE(st.malformed_fdes, 1u);
  EXPECT_EQ(t.find(0x2000), nullptr);
}

// Random damage to real CFI: no crash, no read out of bounds (the sanitized build checks
// that), and every table that comes out is well formed.
TEST(CfiTableBytes, DamagedSectionsNeverCrash) {
  ElfFile f(CFI_STACK_TARGET_CFI);
  ASSERT_NE(f.elf(), nullptr);
  size_t shstrndx = 0;
  ASSERT_EQ(elf_getshdrstrndx(f.elf(), &shstrndx), 0);
  std::vector<uint8_t> eh;
  uint64_t vaddr = 0;
  for (Elf_Scn* s = elf_nextscn(f.elf(), nullptr); s != nullptr; s = elf_nextscn(f.elf(), s)) {
    GElf_Shdr sh;
    gelf_getshdr(s, &sh);
    if (std::strcmp(elf_strptr(f.elf(), shstrndx, sh.sh_name), ".eh_frame") == 0) {
      Elf_Data* d = elf_getdata(s, nullptr);
      auto* p = static_cast<const uint8_t*>(d->d_buf);
      eh.assign(p, p + d->d_size);
      vaddr = sh.sh_addr;
    }
  }
  ASSERT_FALSE(eh.empty());
  std::mt19937 rng(19);
  for (int round = 0; round < 3000; ++round) {
    std::vector<uint8_t> b = eh;
    int flips = 1 + int(rng() % 8);
    for (int k = 0; k < flips; ++k) {
      b[rng() % b.size()] = uint8_t(rng());
    }
    if (round % 4 == 0) {
      b.resize(rng() % b.size());
    }
    CfiStats st;
    CfiTable t = CfiTable::compile_section(b, vaddr, true, 0, &st);
    std::vector<CfiRow> rows(t.rows().begin(), t.rows().end());
    EXPECT_TRUE(CfiTable::from_rows(t.base(), std::move(rows)).ok()) << "round " << round;
  }
}

}  // namespace
}  // namespace profctl
