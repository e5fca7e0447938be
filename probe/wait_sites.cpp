// SPDX-License-Identifier: MIT
#include "probe/wait_sites.h"

#include <Zydis/Zydis.h>

#include <algorithm>

#include "probe/x86_decoder.h"

namespace profctl::probe {
namespace {

constexpr size_t kCalleeWindow = 512;  // bytes of a callee read to look for its syscall
constexpr int kMovToSyscallMax = 12;   // instructions allowed between `mov eax, 202` and it
constexpr uint64_t kSysFutex = 202;

// Direct branch target of a relative call/jmp, if `i` is one.
std::optional<uint64_t> direct_target(const Decoded& i, uint64_t address) {
  if (i.ins.mnemonic != ZYDIS_MNEMONIC_CALL && i.ins.mnemonic != ZYDIS_MNEMONIC_JMP) {
    return std::nullopt;
  }
  const ZydisDecodedOperand& op = i.ops[0];
  if (op.type != ZYDIS_OPERAND_TYPE_IMMEDIATE || !op.imm.is_relative) {
    return std::nullopt;
  }
  ZyanU64 target = 0;
  if (!ZYAN_SUCCESS(ZydisCalcAbsoluteAddress(&i.ins, &op, address, &target))) {
    return std::nullopt;
  }
  return target;
}

// A function whose first instructions (before any other branch) end in a relative jmp, or
// with calls: a relative call: glibc's __futex_abstimed_wait_cancelable64 sets a flag and
// jumps to the common body; __pthread_unwind_next loads a field and calls __pthread_unwind.
std::optional<uint64_t> wrapper_target(std::span<const uint8_t> code, uint64_t address,
                                       bool calls = false) {
  X86Decoder d;
  size_t off = 0;
  for (int n = 0; n < 6 && off < code.size(); ++n) {
    Decoded i;
    if (!d.decode(code.subspan(off), i)) {
      return std::nullopt;
    }
    if (i.ins.mnemonic == ZYDIS_MNEMONIC_JMP || (calls && i.ins.mnemonic == ZYDIS_MNEMONIC_CALL)) {
      return direct_target(i, address + off);
    }
    if (i.ins.meta.category == ZYDIS_CATEGORY_COND_BR || i.ins.mnemonic == ZYDIS_MNEMONIC_CALL ||
        i.ins.mnemonic == ZYDIS_MNEMONIC_RET || i.ins.mnemonic == ZYDIS_MNEMONIC_INT3) {
      return std::nullopt;
    }
    off += i.ins.length;
  }
  return std::nullopt;
}

}  // namespace

bool issues_futex_syscall(std::span<const uint8_t> code) {
  X86Decoder d;
  size_t off = 0;
  int since_mov = -1;  // instructions since `mov eax, 202`; -1: none seen
  while (off < code.size()) {
    Decoded i;
    if (!d.decode(code.subspan(off), i) || i.ins.mnemonic == ZYDIS_MNEMONIC_INT3) {
      return false;  // undecodable, or the padding after the function
    }
    if (i.ins.mnemonic == ZYDIS_MNEMONIC_MOV && i.ins.operand_count_visible == 2 &&
        i.ops[0].type == ZYDIS_OPERAND_TYPE_REGISTER &&
        (i.ops[0].reg.value == ZYDIS_REGISTER_EAX || i.ops[0].reg.value == ZYDIS_REGISTER_RAX) &&
        i.ops[1].type == ZYDIS_OPERAND_TYPE_IMMEDIATE && i.ops[1].imm.value.u == kSysFutex) {
      since_mov = 0;
    } else if (i.ins.mnemonic == ZYDIS_MNEMONIC_SYSCALL) {
      if (since_mov >= 0 && since_mov <= kMovToSyscallMax) {
        return true;
      }
    } else if (since_mov >= 0) {
      ++since_mov;
    }
    off += i.ins.length;
  }
  return false;
}

namespace {

// Direct call targets of [entry, entry + size) in code order, then tail-jump targets, each
// once, leaving out the function's own branches.
std::vector<uint64_t> targets_of(uint64_t entry, uint64_t size, const ReadCode& read) {
  std::vector<uint8_t> code = read(entry, size);
  X86Decoder d;
  // Calls first: the slow path is called; a tail jump more often leads to another variant
  // of the whole operation (elision, robust mutexes).
  std::vector<uint64_t> calls;
  std::vector<uint64_t> jumps;
  for (size_t off = 0; off < code.size();) {
    Decoded i;
    if (!d.decode(std::span(code).subspan(off), i)) {
      break;
    }
    if (i.ins.mnemonic == ZYDIS_MNEMONIC_INT3) {
      break;  // padding: the function ended
    }
    if (auto t = direct_target(i, entry + off); t && (*t < entry || *t >= entry + size)) {
      auto& into = i.ins.mnemonic == ZYDIS_MNEMONIC_CALL ? calls : jumps;
      if (std::find(into.begin(), into.end(), *t) == into.end()) {
        into.push_back(*t);
      }
    }
    off += i.ins.length;
  }
  calls.insert(calls.end(), jumps.begin(), jumps.end());
  return calls;
}

}  // namespace

std::optional<uint64_t> forwarded_callee(uint64_t entry, uint64_t size, const ReadCode& read,
                                         const FunctionLength& length) {
  const std::vector<uint8_t> code = read(entry, std::min<uint64_t>(size == 0 ? 64 : size, 64));
  auto t = wrapper_target(code, entry, true);
  if (!t || (*t >= entry && *t < entry + std::max<uint64_t>(size, 1))) {
    return std::nullopt;
  }
  if (length && length(*t) == 0) {
    return std::nullopt;  // not a function the module's CFI knows
  }
  return t;
}

FunctionLength lengths_from_starts(std::vector<uint64_t> starts) {
  return [starts = std::move(starts)](uint64_t address) -> uint64_t {
    auto it = std::upper_bound(starts.begin(), starts.end(), address);
    if (it == starts.end() || it == starts.begin() || *(it - 1) != address) {
      return 0;  // not a function start the CFI knows
    }
    return *it - address;
  };
}

std::optional<uint64_t> futex_callee(uint64_t entry, uint64_t size, const ReadCode& read,
                                     const std::set<uint64_t>& exclude,
                                     const FunctionLength& length) {
  auto window = [&](uint64_t address) -> size_t {
    const uint64_t n = length ? length(address) : 0;
    return n == 0 ? kCalleeWindow : static_cast<size_t>(std::min<uint64_t>(n, 64 * 1024));
  };
  // The target itself, or the body a jump-only wrapper leads to, when it issues the futex
  // syscall.
  auto match = [&](uint64_t t) -> std::optional<uint64_t> {
    if (exclude.contains(t)) {
      return std::nullopt;
    }
    std::vector<uint8_t> callee = read(t, window(t));
    if (issues_futex_syscall(callee)) {
      return t;
    }
    if (auto next = wrapper_target(callee, t);
        next && !exclude.contains(*next) && issues_futex_syscall(read(*next, window(*next)))) {
      return *next;
    }
    return std::nullopt;
  };
  // Breadth first, two levels: pthread_join and sem_clockwait reach the wait through one
  // internal function (__pthread_clockjoin_ex, __new_sem_wait_slow64).
  const std::vector<uint64_t> first = targets_of(entry, size, read);
  for (uint64_t t : first) {
    if (auto m = match(t)) {
      return m;
    }
  }
  for (uint64_t t : first) {
    if (exclude.contains(t)) {
      continue;
    }
    for (uint64_t u : targets_of(t, window(t), read)) {
      if (auto m = match(u)) {
        return m;
      }
    }
  }
  return std::nullopt;
}

}  // namespace profctl::probe
