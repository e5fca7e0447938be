// SPDX-License-Identifier: MIT
#include "attach/seccomp_check.h"

#include <linux/audit.h>
#include <linux/seccomp.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

#include <algorithm>
#include <bitset>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <system_error>

#include "attach/proc.h"
#include "base/fd.h"
#include "base/text_fields.h"

namespace profctl {
namespace {

// struct seccomp_data as the filter sees it: nr, arch, instruction_pointer, args[6].
constexpr uint32_t kDataBytes = sizeof(seccomp_data);
static_assert(kDataBytes == 64, "seccomp_data is 64 bytes on every architecture");
constexpr uint32_t kActionMask = SECCOMP_RET_ACTION_FULL;
// The kernel caps a thread's filters at 32768 instructions in all, each filter counting 4
// more than its length (MAX_INSNS_PER_PATH): at most this many filters of one instruction.
constexpr size_t kMaxInsnsPerPath = 32768;
constexpr size_t kMaxFilters = kMaxInsnsPerPath / 5 + 1;

std::string at(size_t pc, const std::string& what) {
  return "instruction " + std::to_string(pc) + ": " + what;
}

// The kernel's checks of a seccomp program at install time (seccomp_check_filter and
// bpf_check_classic), as they apply to the program PTRACE_SECCOMP_GET_FILTER returns, which
// is the one the process passed in, before the kernel's rewriting. A program that passes
// cannot make the interpreter below index out of range. Kept whole (one case per opcode, as
// the kernel's own switch): it reads against bpf_check_classic line by line.
Result<void> check_program(std::span<const sock_filter> program) {
  if (program.empty() || program.size() > BPF_MAXINSNS) {
    return Error{"a program of " + std::to_string(program.size()) + " instructions"};
  }
  const size_t len = program.size();
  for (size_t pc = 0; pc < len; ++pc) {
    const sock_filter& f = program[pc];
    switch (f.code) {
      case BPF_LD | BPF_W | BPF_ABS:
        if (f.k >= kDataBytes || f.k % 4 != 0) {
          return Error{at(pc, "load at offset " + std::to_string(f.k) + " outside seccomp_data")};
        }
        break;
      case BPF_LD | BPF_MEM:
      case BPF_LDX | BPF_MEM:
      case BPF_ST:
      case BPF_STX:
        if (f.k >= BPF_MEMWORDS) {
          return Error{at(pc, "scratch memory word " + std::to_string(f.k) + " out of range")};
        }
        break;
      case BPF_ALU | BPF_DIV | BPF_K:
        if (f.k == 0) {
          return Error{at(pc, "division by zero")};
        }
        break;
      case BPF_ALU | BPF_LSH | BPF_K:
      case BPF_ALU | BPF_RSH | BPF_K:
        if (f.k >= 32) {
          return Error{at(pc, "shift by " + std::to_string(f.k))};
        }
        break;
      case BPF_JMP | BPF_JA:
        if (f.k >= len - pc - 1) {
          return Error{at(pc, "jump out of the program")};
        }
        break;
      case BPF_JMP | BPF_JEQ | BPF_K:
      case BPF_JMP | BPF_JEQ | BPF_X:
      case BPF_JMP | BPF_JGE | BPF_K:
      case BPF_JMP | BPF_JGE | BPF_X:
      case BPF_JMP | BPF_JGT | BPF_K:
      case BPF_JMP | BPF_JGT | BPF_X:
      case BPF_JMP | BPF_JSET | BPF_K:
      case BPF_JMP | BPF_JSET | BPF_X:
        if (pc + f.jt + 1 >= len || pc + f.jf + 1 >= len) {
          return Error{at(pc, "jump out of the program")};
        }
        break;
      case BPF_LD | BPF_W | BPF_LEN:
      case BPF_LDX | BPF_W | BPF_LEN:
      case BPF_LD | BPF_IMM:
      case BPF_LDX | BPF_IMM:
      case BPF_RET | BPF_K:
      case BPF_RET | BPF_A:
      case BPF_ALU | BPF_ADD | BPF_K:
      case BPF_ALU | BPF_ADD | BPF_X:
      case BPF_ALU | BPF_SUB | BPF_K:
      case BPF_ALU | BPF_SUB | BPF_X:
      case BPF_ALU | BPF_MUL | BPF_K:
      case BPF_ALU | BPF_MUL | BPF_X:
      case BPF_ALU | BPF_DIV | BPF_X:
      case BPF_ALU | BPF_AND | BPF_K:
      case BPF_ALU | BPF_AND | BPF_X:
      case BPF_ALU | BPF_OR | BPF_K:
      case BPF_ALU | BPF_OR | BPF_X:
      case BPF_ALU | BPF_XOR | BPF_K:
      case BPF_ALU | BPF_XOR | BPF_X:
      case BPF_ALU | BPF_LSH | BPF_X:
      case BPF_ALU | BPF_RSH | BPF_X:
      case BPF_ALU | BPF_NEG:
      case BPF_MISC | BPF_TAX:
      case BPF_MISC | BPF_TXA:
        break;
      default: {
        char code[16];
        std::snprintf(code, sizeof code, "0x%04x", f.code);
        return Error{at(pc, std::string("opcode ") + code + " is not one seccomp accepts")};
      }
    }
  }
  const uint16_t last = program.back().code;
  if (last != (BPF_RET | BPF_K) && last != (BPF_RET | BPF_A)) {
    return Error{"the program does not end with a return"};
  }
  return {};
}

// The 16 32-bit words a BPF_ABS load reads: seccomp_data in the machine's byte order.
std::array<uint32_t, kDataBytes / 4> data_words(const RemoteSyscall& call) {
  seccomp_data d{};
  d.nr = static_cast<int>(call.nr);
  d.arch = AUDIT_ARCH_X86_64;
  d.instruction_pointer = call.ip;
  for (size_t i = 0; i < call.args.size(); ++i) {
    d.args[i] = call.args[i];
  }
  std::array<uint32_t, kDataBytes / 4> words{};
  std::memcpy(words.data(), &d, sizeof d);
  return words;
}

uint32_t alu(uint16_t op, uint32_t a, uint32_t operand) {
  switch (op) {
    case BPF_ADD:
      return a + operand;
    case BPF_SUB:
      return a - operand;
    case BPF_MUL:
      return a * operand;
    case BPF_DIV:
      return a / operand;  // operand != 0: checked by the caller
    case BPF_AND:
      return a & operand;
    case BPF_OR:
      return a | operand;
    case BPF_XOR:
      return a ^ operand;
    case BPF_LSH:
      return a << (operand & 31);  // a shift by X is masked, as the kernel's interpreter does
    case BPF_RSH:
      return a >> (operand & 31);
    default:
      return a;  // unreachable after check_program
  }
}

bool jump_taken(uint16_t op, uint32_t a, uint32_t operand) {
  switch (op) {
    case BPF_JEQ:
      return a == operand;
    case BPF_JGT:
      return a > operand;
    case BPF_JGE:
      return a >= operand;
    case BPF_JSET:
      return (a & operand) != 0;
    default:
      return false;  // unreachable after check_program
  }
}

std::string hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// What the kernel does with the deciding return value, for the refusal's message.
std::string refusal(uint32_t ret, long nr) {
  const std::string name = syscall_name(nr);
  const std::string by = "the target's seccomp filter would ";
  // The kernel caps the errno at MAX_ERRNO (4095).
  const uint32_t data = std::min<uint32_t>(ret & SECCOMP_RET_DATA, 4095);
  switch (ret & kActionMask) {
    case SECCOMP_RET_KILL_PROCESS:
      return by + "kill it for " + name + " (SECCOMP_RET_KILL_PROCESS)";
    case SECCOMP_RET_KILL_THREAD:
      return by + "kill the thread for " + name + " (SECCOMP_RET_KILL_THREAD)";
    case SECCOMP_RET_TRAP:
      return by + "send it SIGSYS for " + name + " (SECCOMP_RET_TRAP)";
    case SECCOMP_RET_ERRNO:
      return by + "fail " + name + " with errno " + std::to_string(data) + " (" +
             std::generic_category().message(static_cast<int>(data)) + ", SECCOMP_RET_ERRNO)";
    case SECCOMP_RET_USER_NOTIF:
      return by + "hand " + name + " to its supervisor process (SECCOMP_RET_USER_NOTIF)";
    case SECCOMP_RET_TRACE:
      return by + "hand " + name +
             " to a seccomp tracer (SECCOMP_RET_TRACE), which profctl is not: it would fail "
             "with ENOSYS";
    default:
      return by + "return " + hex(ret) + " for " + name +
             ", an action the kernel does not know and treats as a kill";
  }
}

bool allowed(uint32_t ret, SeccompNeed need) {
  const uint32_t action = ret & kActionMask;
  if (need == SeccompNeed::kSurvive) {
    // The call may fail; the thread must live (and get no SIGSYS).
    return action == SECCOMP_RET_ALLOW || action == SECCOMP_RET_LOG ||
           action == SECCOMP_RET_ERRNO || action == SECCOMP_RET_TRACE ||
           action == SECCOMP_RET_USER_NOTIF;
  }
  return action == SECCOMP_RET_ALLOW || action == SECCOMP_RET_LOG;
}

std::string status_path(pid_t tid) {
  return "/proc/" + std::to_string(tid) + "/task/" + std::to_string(tid) + "/status";
}

// Each line of a /proc status text as key and value (after the colon).
template <class F>
void for_each_status_line(std::string_view text, F&& f) {
  while (!text.empty()) {
    const size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    const size_t colon = line.find(':');
    if (colon != std::string_view::npos) {
      f(line.substr(0, colon), line.substr(colon + 1));
    }
  }
}

// Strict mode (SECCOMP_SET_MODE_STRICT) allows only these; anything else is SIGKILL.
bool strict_mode_allows(long nr) {
  return nr == SYS_read || nr == SYS_write || nr == SYS_exit || nr == SYS_rt_sigreturn;
}

// Filter `index` of thread `tid` (0 the newest) into `buf`; nullopt when there is none at
// that index.
Result<std::optional<SeccompProgram>> fetch_filter(pid_t tid, size_t index,
                                                   std::vector<sock_filter>& buf) {
  // Sized for the longest program the kernel accepts, whatever a length query would say:
  // the kernel copies the whole filter, and the list can grow between two calls.
  buf.resize(BPF_MAXINSNS);
  const long n = ptrace(PTRACE_SECCOMP_GET_FILTER, tid, reinterpret_cast<void*>(index), buf.data());
  if (n < 0) {
    if (errno == ENOENT) {
      return std::optional<SeccompProgram>{};
    }
    return errno_error("PTRACE_SECCOMP_GET_FILTER " + std::to_string(tid) + " #" +
                       std::to_string(index));
  }
  if (n == 0 || n > BPF_MAXINSNS) {
    return Error{"PTRACE_SECCOMP_GET_FILTER " + std::to_string(tid) + " #" + std::to_string(index) +
                 " returned " + std::to_string(n) + " instructions"};
  }
  return std::optional<SeccompProgram>(std::in_place, buf.begin(), buf.begin() + n);
}

// Why a filter could not be read, as the user can act on it.
std::string cannot_read(pid_t tid, const Error& e) {
  std::string why = "cannot tell whether thread " + std::to_string(tid) +
                    "'s seccomp filters allow profctl's syscalls (" + e.message() + ")";
  if (e.err == EACCES) {
    why +=
        ": reading them needs CAP_SYS_ADMIN and a profctl not itself under seccomp (run it "
        "as root from the host, not inside the target's sandbox or container)";
  } else if (e.err == EINVAL) {
    why += ": this kernel cannot dump seccomp filters (CONFIG_CHECKPOINT_RESTORE)";
  } else if (e.err == EMEDIUMTYPE) {
    why += ": a filter the kernel keeps no classic-BPF copy of";
  }
  return why;
}

}  // namespace

// The interpreter, kept whole: one case per instruction class; split, its registers (a, x
// and the scratch memory) would be passed around.
Result<uint32_t> run_seccomp_program(std::span<const sock_filter> program,
                                     const RemoteSyscall& call) {
  if (auto ok = check_program(program); !ok) {
    return ok.error();
  }
  const auto data = data_words(call);
  uint32_t a = 0;
  uint32_t x = 0;
  std::array<uint32_t, BPF_MEMWORDS> mem{};
  std::bitset<BPF_MEMWORDS> written;
  // Every jump goes forward (check_program), so pc grows at every step: at most len steps.
  for (size_t pc = 0; pc < program.size(); ++pc) {
    const sock_filter& f = program[pc];
    const uint16_t cls = BPF_CLASS(f.code);
    switch (cls) {
      case BPF_LD:
      case BPF_LDX: {
        uint32_t v = 0;
        switch (BPF_MODE(f.code)) {
          case BPF_ABS:
            v = data[f.k / 4];
            break;
          case BPF_LEN:
            v = kDataBytes;
            break;
          case BPF_IMM:
            v = f.k;
            break;
          case BPF_MEM:
            // The kernel refuses a program that can read a word before writing it.
            if (!written.test(f.k)) {
              return Error{at(pc, "reads scratch memory never written")};
            }
            v = mem[f.k];
            break;
          default:
            return Error{at(pc, "bad load")};
        }
        (cls == BPF_LD ? a : x) = v;
        break;
      }
      case BPF_ST:
      case BPF_STX:
        mem[f.k] = cls == BPF_ST ? a : x;
        written.set(f.k);
        break;
      case BPF_ALU:
        if (BPF_OP(f.code) == BPF_NEG) {
          a = 0U - a;
        } else {
          const uint32_t operand = BPF_SRC(f.code) == BPF_X ? x : f.k;
          if (BPF_OP(f.code) == BPF_DIV && operand == 0) {
            return 0U;  // the kernel's program returns 0 (SECCOMP_RET_KILL_THREAD)
          }
          a = alu(BPF_OP(f.code), a, operand);
        }
        break;
      case BPF_JMP:
        if (BPF_OP(f.code) == BPF_JA) {
          pc += f.k;
        } else {
          const uint32_t operand = BPF_SRC(f.code) == BPF_X ? x : f.k;
          pc += jump_taken(BPF_OP(f.code), a, operand) ? f.jt : f.jf;
        }
        break;
      case BPF_RET:
        return BPF_RVAL(f.code) == BPF_A ? a : f.k;
      case BPF_MISC:
        if (BPF_MISCOP(f.code) == BPF_TAX) {
          x = a;
        } else {
          a = x;
        }
        break;
      default:
        return Error{at(pc, "bad instruction class")};
    }
  }
  return Error{"ran off the end of the program"};  // unreachable: the last is a return
}

Result<void> seccomp_filters_allow(std::span<const SeccompProgram> filters,
                                   const RemoteSyscall& call, SeccompNeed need) {
  // seccomp_run_filters: every filter runs, the lowest action as a signed value wins (ties:
  // the first in the list, the newest, which is where PTRACE_SECCOMP_GET_FILTER starts).
  uint32_t ret = SECCOMP_RET_ALLOW;
  for (size_t i = 0; i < filters.size(); ++i) {
    auto r = run_seccomp_program(filters[i], call);
    if (!r) {
      return Error{"cannot tell whether the target's seccomp filter #" + std::to_string(i) +
                   " allows " + syscall_name(call.nr) + ": " + r.error().what};
    }
    if (static_cast<int32_t>(*r & kActionMask) < static_cast<int32_t>(ret & kActionMask)) {
      ret = *r;
    }
  }
  if (allowed(ret, need)) {
    return {};
  }
  return Error{refusal(ret, call.nr)};
}

SeccompStatus parse_seccomp_status(std::string_view status_text) {
  SeccompStatus st;
  for_each_status_line(status_text, [&](std::string_view key, std::string_view value) {
    if (key == "Seccomp") {
      int mode = 0;
      if (parse_num(next_token(value), mode)) {
        st.mode = mode;
      }
    } else if (key == "Seccomp_filters") {
      size_t n = 0;
      if (parse_num(next_token(value), n)) {
        st.filters = n;
      }
    }
  });
  return st;
}

bool status_has_shadow_stack(std::string_view status_text) {
  bool found = false;
  for_each_status_line(status_text, [&](std::string_view key, std::string_view value) {
    if (key != "x86_Thread_features") {
      return;
    }
    for (std::string_view tok = next_token(value); !tok.empty(); tok = next_token(value)) {
      found = found || tok == "shstk";
    }
  });
  return found;
}

Result<void> seccomp_allows(pid_t tid, const RemoteSyscall& call, SeccompNeed need) {
  auto text = read_file(status_path(tid));
  if (!text) {
    return Error{"cannot read thread " + std::to_string(tid) + "'s seccomp mode", text.error().err};
  }
  const SeccompStatus st = parse_seccomp_status(*text);
  // No "Seccomp:" line: a kernel built without seccomp, where no filter can exist.
  const int mode = st.mode.value_or(SECCOMP_MODE_DISABLED);
  if (mode == SECCOMP_MODE_DISABLED) {
    return {};
  }
  if (mode == SECCOMP_MODE_STRICT) {
    if (strict_mode_allows(call.nr)) {
      return {};
    }
    return Error{"the target's thread " + std::to_string(tid) +
                 " is in seccomp strict mode: " + syscall_name(call.nr) + " would kill it"};
  }
  if (mode != SECCOMP_MODE_FILTER) {
    return Error{"thread " + std::to_string(tid) + " is in an unknown seccomp mode " +
                 std::to_string(mode)};
  }
  // Filters are re-read at every call (no cache): a handful of remote syscalls per install,
  // and a thread may add a filter between two of them. Read until ENOENT rather than up to
  // the status's count: a filter added since then is index 0, and the count check below
  // catches the difference.
  std::vector<SeccompProgram> filters;
  std::vector<sock_filter> buf;
  for (size_t index = 0; index <= kMaxFilters; ++index) {
    auto f = fetch_filter(tid, index, buf);
    if (!f) {
      return Error{cannot_read(tid, f.error())};
    }
    if (!f->has_value()) {
      break;
    }
    filters.push_back(std::move(**f));
  }
  // The status's count, where the kernel prints it, must match what was read: a mode-2 thread
  // with no filter read, or fewer than counted, is a list that cannot be trusted.
  if (filters.empty() || filters.size() > kMaxFilters ||
      (st.filters && *st.filters != filters.size())) {
    return Error{"cannot tell whether thread " + std::to_string(tid) +
                 "'s seccomp filters allow profctl's syscalls (" + std::to_string(filters.size()) +
                 " filters read, " + (st.filters ? std::to_string(*st.filters) : std::string("?")) +
                 " counted)"};
  }
  return seccomp_filters_allow(filters, call, need);
}

bool thread_has_shadow_stack(pid_t tid) {
  auto text = read_file(status_path(tid));
  return text && status_has_shadow_stack(*text);
}

}  // namespace profctl
