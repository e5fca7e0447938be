// SPDX-License-Identifier: MIT
// CfiWalker: unwinds a stack copy with compiled CFI tables (cfi_table.h): per frame, the
// module of the pc, its row, the CFA from rsp or rbp, and two reads from the copy (return
// address, rbp). No libdwfl, no allocation. Where a row cannot go on (no module, no row, a
// "not expressible" row, a read outside the copy, a frame that does not move up the
// stack) the walk stops and says where, so that libdwfl can finish it; an undefined
// return address (_start, clone's child) ends it cleanly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "unwind/cfi_table.h"

namespace profctl {

// A module's table placed in an address space: [start, end) target addresses, each being
// its link-time address + bias.
struct CfiModule {
  uint64_t start = 0;
  uint64_t end = 0;
  uint64_t bias = 0;
  // Not owned; may be empty. nullptr: not loaded yet, the walk stops with kNoTable so
  // that the caller loads it (set_table) and walks again: tables of modules no stack
  // passes through are never compiled.
  const CfiTable* table = nullptr;
  uint32_t id = 0;  // the caller's name for the module, reported with kNoTable
};

struct CfiRegs {
  uint64_t rip = 0;
  uint64_t rsp = 0;
  uint64_t rbp = 0;
};

// The stack copy [base, base + size): every read is bounds-checked, no sum overflows.
struct StackCopy {
  uint64_t base = 0;
  size_t size = 0;
  const std::byte* bytes = nullptr;

  bool read(uint64_t addr, uint64_t* out) const {
    if (addr < base || size < sizeof(uint64_t) || addr - base > size - sizeof(uint64_t)) {
      return false;
    }
    std::memcpy(out, bytes + (addr - base), sizeof(uint64_t));
    return true;
  }
};

enum class CfiStop : uint8_t {
  kOutermost,       // the return address is undefined (or 0): the walk is complete
  kNoModule,        // the pc is in no module with a table
  kNoRow,           // the module's table has no row for the pc (no FDE)
  kNotExpressible,  // the row needs libdwfl (expression, signal frame, ...)
  kReadFailed,      // the return address or rbp is outside the stack copy
  kBadFrame,        // the caller's rsp is not above the callee's: corrupt or unusual
  kMaxFrames,       // the output is full
  kNoTable,         // the pc's module has no table loaded yet (CfiWalkResult::module)
};
inline constexpr size_t kCfiStopCount = 8;

const char* to_string(CfiStop s);

struct CfiWalkResult {
  size_t frames = 0;  // pcs written, innermost first; pcs[0] is the interrupted pc itself
  CfiStop stop = CfiStop::kOutermost;
  // The registers of the last frame written, the one the walk could not unwind: where
  // libdwfl would continue (its other callee-saved registers are not known).
  CfiRegs at;
  uint32_t module = 0;  // CfiModule::id, when kNoTable
};

class CfiWalker {
 public:
  // `modules`: any order; copied and sorted. Overlapping modules are not expected.
  explicit CfiWalker(std::vector<CfiModule> modules);

  CfiWalkResult walk(CfiRegs regs, const StackCopy& stack, uint64_t* pcs, size_t max) const;

  const CfiModule* module_of(uint64_t pc) const;
  const std::vector<CfiModule>& modules() const { return modules_; }  // sorted by start
  // Gives module `id` its load bias and table (not owned).
  void place(uint32_t id, uint64_t bias, const CfiTable* table);

 private:
  std::vector<CfiModule> modules_;
};

}  // namespace profctl
