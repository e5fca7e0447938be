// SPDX-License-Identifier: MIT
#include "unwind/cfi_walker.h"

#include <algorithm>

namespace profctl {

const char* to_string(CfiStop s) {
  switch (s) {
    case CfiStop::kOutermost:
      return "outermost frame";
    case CfiStop::kNoModule:
      return "pc in no module with CFI";
    case CfiStop::kNoRow:
      return "no CFI row for pc";
    case CfiStop::kNotExpressible:
      return "CFI row not expressible";
    case CfiStop::kReadFailed:
      return "read outside the stack copy";
    case CfiStop::kBadFrame:
      return "frame does not move up the stack";
    case CfiStop::kMaxFrames:
      return "max frames";
    case CfiStop::kNoTable:
      return "table not loaded";
  }
  return "?";
}

CfiWalker::CfiWalker(std::vector<CfiModule> modules) : modules_(std::move(modules)) {
  std::sort(modules_.begin(), modules_.end(),
            [](const CfiModule& a, const CfiModule& b) { return a.start < b.start; });
}

const CfiModule* CfiWalker::module_of(uint64_t pc) const {
  auto it = std::upper_bound(modules_.begin(), modules_.end(), pc,
                             [](uint64_t p, const CfiModule& m) { return p < m.start; });
  if (it == modules_.begin()) {
    return nullptr;
  }
  --it;
  return pc < it->end ? &*it : nullptr;
}

void CfiWalker::place(uint32_t id, uint64_t bias, const CfiTable* table) {
  for (CfiModule& m : modules_) {
    if (m.id == id) {
      m.bias = bias;
      m.table = table;
    }
  }
}

CfiWalkResult CfiWalker::walk(CfiRegs regs, const StackCopy& stack, uint64_t* pcs,
                              size_t max) const {
  CfiWalkResult out;
  out.at = regs;
  if (max == 0) {
    out.stop = CfiStop::kMaxFrames;
    return out;
  }
  pcs[out.frames++] = regs.rip;
  // The first pc is the interrupted instruction; later ones are return addresses, which
  // may be one past the end of their call's function (a noreturn call): look up pc - 1.
  uint64_t lookup = regs.rip;
  const CfiModule* mod = nullptr;
  bool rbp_known = true;  // false after a frame whose caller's rbp is undefined
  for (;;) {
    if (mod == nullptr || lookup < mod->start || lookup >= mod->end) {
      mod = module_of(lookup);
      if (mod == nullptr) {
        out.stop = CfiStop::kNoModule;
        return out;
      }
    }
    if (mod->table == nullptr) {
      out.stop = CfiStop::kNoTable;
      out.module = mod->id;
      return out;
    }
    const CfiRow* row = mod->table->find(lookup - mod->bias);
    if (row == nullptr) {
      out.stop = CfiStop::kNoRow;
      return out;
    }
    if (row->cfa == CfaRule::kNotExpressible || (row->cfa == CfaRule::kRbp && !rbp_known)) {
      out.stop = CfiStop::kNotExpressible;
      return out;
    }
    if (row->ra == SavedRule::kUndefined) {
      out.stop = CfiStop::kOutermost;
      return out;
    }
    const uint64_t cfa = (row->cfa == CfaRule::kRsp ? regs.rsp : regs.rbp) +
                         static_cast<uint64_t>(static_cast<int64_t>(row->cfa_offset));
    uint64_t ra = 0;
    if (!stack.read(cfa + static_cast<uint64_t>(int64_t{row->ra_offset}), &ra)) {
      out.stop = CfiStop::kReadFailed;
      return out;
    }
    uint64_t rbp = regs.rbp;
    if (row->rbp == SavedRule::kAtCfa &&
        !stack.read(cfa + static_cast<uint64_t>(int64_t{row->rbp_offset}), &rbp)) {
      out.stop = CfiStop::kReadFailed;
      return out;
    }
    if (ra == 0) {
      out.stop = CfiStop::kOutermost;  // as libdwfl: no pc 0 on x86-64, the end
      return out;
    }
    if (cfa <= regs.rsp) {
      out.stop = CfiStop::kBadFrame;
      return out;
    }
    if (out.frames == max) {
      out.stop = CfiStop::kMaxFrames;
      return out;
    }
    rbp_known = row->rbp != SavedRule::kUndefined;
    regs = CfiRegs{ra, cfa, rbp};
    pcs[out.frames++] = ra;
    out.at = regs;
    lookup = ra - 1;
  }
}

}  // namespace profctl
