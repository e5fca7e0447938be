// SPDX-License-Identifier: MIT
#include "attach/stopped_world.h"

#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "attach/proc.h"
#include "attach/seccomp_check.h"
#include "attach/sigreturn_frame.h"
#include "attach/traced_process.h"
#include "base/log.h"

namespace profctl {

StoppedWorld::StoppedWorld(TracedProcess& tp, pid_t mem_pid, std::vector<pid_t> stopped,
                           std::vector<pid_t> not_stopped, bool resume_at_end)
    : tp_(tp),
      pid_(mem_pid),
      stopped_(std::move(stopped)),
      not_stopped_(std::move(not_stopped)),
      resume_at_end_(resume_at_end) {}

StoppedWorld::~StoppedWorld() {
  if (resume_at_end_) {
    tp_.resume_all(false);
  }
}

Result<user_regs_struct> StoppedWorld::regs(pid_t tid) const {
  user_regs_struct r{};
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &r) != 0) {
    return errno_error("PTRACE_GETREGS " + std::to_string(tid));
  }
  return r;
}

Result<void> StoppedWorld::set_regs(pid_t tid, const user_regs_struct& r) {
  if (ptrace(PTRACE_SETREGS, tid, nullptr, &r) != 0) {
    return errno_error("PTRACE_SETREGS " + std::to_string(tid));
  }
  return {};
}

Result<void> StoppedWorld::open_mem() {
  if (!mem_.valid()) {
    auto fd = Fd::open("/proc/" + std::to_string(pid_) + "/mem", O_RDWR);
    if (!fd) {
      return fd.error();
    }
    mem_ = std::move(*fd);
  }
  return {};
}

Result<size_t> StoppedWorld::read(uint64_t addr, std::span<std::byte> out) {
  if (auto r = open_mem(); !r) {
    return r.error();
  }
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n =
        pread(mem_.get(), out.data() + done, out.size() - done, static_cast<off_t>(addr + done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      if (done == 0 && n < 0) {
        return errno_error("reading target memory at " + std::to_string(addr));
      }
      break;
    }
    done += static_cast<size_t>(n);
  }
  return done;
}

Result<void> StoppedWorld::write(uint64_t addr, std::span<const std::byte> data) {
  if (auto r = open_mem(); !r) {
    return r.error();
  }
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n =
        pwrite(mem_.get(), data.data() + done, data.size() - done, static_cast<off_t>(addr + done));
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      return errno_error("writing target memory at " + std::to_string(addr + done));
    }
    done += static_cast<size_t>(n);
  }
  return {};
}

namespace {

// A `syscall; ret` pair (glibc's getpid and friends end so) and glibc's __restore_rt.
constexpr uint8_t kSyscallRet[] = {0x0f, 0x05, 0xc3};
constexpr uint8_t kSigreturn[] = {0x48, 0xc7, 0xc0, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05};
constexpr uint8_t kSigreturn32[] = {0xb8, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x05};

// A thread stopped by PTRACE_INTERRUPT (or a seized child's first stop) sits in the
// kernel's signal handling: resuming it from there runs the syscall-restart logic on the
// registers it then has. Group-stops carry the stop signal instead of SIGTRAP; signal and
// ptrace-event stops carry other codes.
bool at_interrupt_stop(pid_t tid) {
  siginfo_t si{};
  if (ptrace(PTRACE_GETSIGINFO, tid, nullptr, &si) != 0) {
    return false;
  }
  return si.si_signo == SIGTRAP && si.si_code == (SIGTRAP | (PTRACE_EVENT_STOP << 8));
}

// The thread's extended register state in the layout a signal frame holds.
std::vector<std::byte> read_xstate(pid_t tid) {
  std::vector<std::byte> buf(64 * 1024);
  iovec iov{buf.data(), buf.size()};
  if (ptrace(PTRACE_GETREGSET, tid, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) == 0) {
    buf.resize(iov.iov_len);
    return buf;
  }
  user_fpregs_struct fx{};
  if (ptrace(PTRACE_GETFPREGS, tid, nullptr, &fx) == 0) {
    buf.assign(sizeof fx, std::byte{0});
    std::memcpy(buf.data(), &fx, sizeof fx);
    return buf;
  }
  return {};
}

Result<uint64_t> get_sigmask(pid_t tid) {
  uint64_t mask = 0;
  if (ptrace(PTRACE_GETSIGMASK, tid, sizeof mask, &mask) != 0) {
    return errno_error("PTRACE_GETSIGMASK " + std::to_string(tid));
  }
  return mask;
}

Result<void> set_sigmask(pid_t tid, uint64_t mask) {
  if (ptrace(PTRACE_SETSIGMASK, tid, sizeof mask, &mask) != 0) {
    return errno_error("PTRACE_SETSIGMASK " + std::to_string(tid));
  }
  return {};
}

__ptrace_syscall_info syscall_info(pid_t tid) {
  __ptrace_syscall_info info{};
  if (ptrace(PTRACE_GET_SYSCALL_INFO, tid, sizeof info, &info) <= 0) {
    info.op = PTRACE_SYSCALL_INFO_NONE;
  }
  return info;
}

}  // namespace

Result<void> StoppedWorld::find_chain() {
  auto& chain = tp_.chain_;
  if (chain.syscall_ret != 0 && chain.sigreturn != 0 && chain.pid == pid_ &&
      chain.space == tp_.space_id_) {
    return {};
  }
  chain = {};
  auto text = read_maps_text(pid_);
  if (!text) {
    return text.error();
  }
  // libc first (both are there in glibc), then the vDSO, then anything executable.
  std::vector<MapEntry> maps = parse_maps(*text);
  auto rank = [](const MapEntry& m) {
    return m.path.find("/libc.so") != std::string::npos ? 0 : m.path == "[vdso]" ? 1 : 2;
  };
  std::stable_sort(maps.begin(), maps.end(),
                   [&](const MapEntry& a, const MapEntry& b) { return rank(a) < rank(b); });
  std::vector<std::byte> buf(1 << 16);
  auto find = [&](std::span<const std::byte> hay, std::span<const uint8_t> needle) {
    auto it = std::search(hay.begin(), hay.end(), needle.begin(), needle.end(),
                          [](std::byte b, uint8_t n) { return b == std::byte{n}; });
    return it == hay.end() ? -1 : static_cast<long>(it - hay.begin());
  };
  for (const MapEntry& m : maps) {
    if (!m.executable || m.path == "[vsyscall]") {
      continue;
    }
    constexpr size_t kOverlap = sizeof kSigreturn - 1;
    for (uint64_t a = m.start; a < m.end; a += buf.size() - kOverlap) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), m.end - a));
      auto n = read(a, std::span(buf.data(), want));
      if (!n || *n < sizeof kSyscallRet) {
        break;
      }
      std::span<const std::byte> hay(buf.data(), *n);
      if (chain.syscall_ret == 0) {
        if (long at = find(hay, kSyscallRet); at >= 0) {
          chain.syscall_ret = a + static_cast<uint64_t>(at);
        }
      }
      if (chain.sigreturn == 0) {
        long at = find(hay, kSigreturn);
        if (at >= 0) {
          chain.sigreturn = a + static_cast<uint64_t>(at);
          chain.sigreturn_next = chain.sigreturn + sizeof kSigreturn;
        } else if (at = find(hay, kSigreturn32); at >= 0) {
          chain.sigreturn = a + static_cast<uint64_t>(at);
          chain.sigreturn_next = chain.sigreturn + sizeof kSigreturn32;
        }
      }
      if (chain.syscall_ret != 0 && chain.sigreturn != 0) {
        chain.pid = pid_;
        chain.space = tp_.space_id_;
        return {};
      }
      if (*n < want) {
        break;
      }
    }
  }
  chain = {};
  return Error{"pid " + std::to_string(pid_) +
               " has no `syscall; ret` and rt_sigreturn code to run a syscall through"};
}

pid_t StoppedWorld::pick_thread() {
  // A forked child at its first stop is in no thread table (its world is its own). A thread
  // holding a signal to re-deliver is not used: the signal can only be injected from the
  // signal stop it is in, which the syscall would end.
  auto ours_to_run = [&](pid_t tid) {
    const TracedThread* t = tp_.table_.find(tid);
    return t == nullptr || (t->state == TState::kStopped && !t->group_stop &&
                            !t->signal_in_kernel && t->pending_signal == 0);
  };
  for (pid_t tid : stopped_) {
    if (ours_to_run(tid) && at_interrupt_stop(tid)) {
      return tid;
    }
  }
  // None is in an interrupt stop (a program `run` holds at its entry point is in the stop
  // of profctl's own breakpoint; a thread may be in a fork or clone event): move one into
  // one. It goes where it was going anyway; the interrupt stops it before user mode.
  for (pid_t tid : stopped_) {
    if (ours_to_run(tid) && settle(tid)) {
      return tid;
    }
  }
  return 0;
}

bool StoppedWorld::settle(pid_t tid) {
  if (ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0 ||
      ptrace(PTRACE_CONT, tid, nullptr, nullptr) != 0) {
    return false;
  }
  for (int i = 0; i < 64; ++i) {
    auto ev = tp_.waits().next_status_of(tid, std::chrono::seconds(2));
    if (!ev) {
      return false;
    }
    if (!ev->status.stopped()) {
      tp_.on_status(*ev);
      return false;
    }
    if (ev->status.kind() == WaitStatus::Kind::kSignalStop) {
      // A signal for the target on the way: delivered now, with its siginfo (the pending
      // interrupt stops the thread right after).
      if (ptrace(PTRACE_CONT, tid, nullptr, ev->status.signal()) != 0) {
        return false;
      }
      continue;
    }
    if (at_interrupt_stop(tid)) {
      return true;
    }
    if (ptrace(PTRACE_CONT, tid, nullptr, nullptr) != 0) {
      return false;
    }
  }
  return false;
}

Result<bool> StoppedWorld::await_chain_stop(pid_t tid, bool& restop, bool want_interrupt) {
  int strays = 0;
  for (;;) {
    auto ev = tp_.waits().next_status_of(tid, std::chrono::seconds(10));
    if (!ev) {
      return Error{"thread " + std::to_string(tid) + " did not finish a remote syscall"};
    }
    if (!ev->status.stopped()) {
      tp_.on_status(*ev);  // it died: the table learns it
      return false;
    }
    if (ev->pending_in_kernel) {
      tp_.waits().consume(*ev);
    }
    if (auto log = logger("attach"); log->should_log(spdlog::level::trace)) {
      std::ostringstream os;
      os << ev->status;
      log->trace("remote syscall: thread {} {}", tid, os.str());
    }
    // Every blockable signal is blocked: a signal stop here is SIGSTOP, sent again once
    // the thread is back in its own state. An interrupt stop is an earlier
    // PTRACE_INTERRUPT the thread had not acted on yet (a world stop's, re-armed while a
    // signal was re-delivered): it changes nothing, the thread goes on.
    const bool sigstop =
        ev->status.kind() == WaitStatus::Kind::kSignalStop && ev->status.signal() == SIGSTOP;
    if ((sigstop || (ev->status.kind() == WaitStatus::Kind::kEventStop && !want_interrupt)) &&
        ++strays < 16) {
      restop = restop || sigstop;
      if (ptrace(PTRACE_SYSCALL, tid, nullptr, nullptr) != 0) {
        return errno_error("PTRACE_SYSCALL " + std::to_string(tid));
      }
      continue;
    }
    return true;
  }
}

// One remote syscall, in phases: pick a thread and check the call can run (syscall_thread),
// save the thread and lay the sigreturn frame that restores it (save_thread), run the
// chain (run_chain), and put the thread back where it was (restore_thread).
struct StoppedWorld::SavedThread {
  user_regs_struct regs{};
  uint64_t mask = 0;
  uint64_t frame = 0;  // the sigreturn frame below its stack: the chain's stack pointer
};

struct StoppedWorld::ChainRun {
  pid_t tid = 0;
  bool restop = false;  // a SIGSTOP arrived meanwhile: sent again at the end
  bool alive = true;
  __ptrace_syscall_info info{};  // at the last stop
};

Result<long> StoppedWorld::syscall(long nr, std::array<uint64_t, 6> args) {
  auto tid = syscall_thread(nr, args);
  if (!tid) {
    return tid.error();
  }
  auto saved = save_thread(*tid);
  if (!saved) {
    return saved.error();
  }
  // From the SETREGS on, the thread restores itself whenever it is let go.
  user_regs_struct r = saved->regs;
  r.rip = tp_.chain_.syscall_ret;
  r.rsp = saved->frame;
  r.rax = static_cast<unsigned long long>(nr);
  // orig_rax = -1: the resume from the interrupt stop must not restart a syscall the
  // thread was in (that would move rip back by two); the frame and `saved` hold that state.
  r.orig_rax = static_cast<unsigned long long>(-1);
  r.rdi = args[0];
  r.rsi = args[1];
  r.rdx = args[2];
  r.r10 = args[3];
  r.r8 = args[4];
  r.r9 = args[5];
  if (auto s = set_regs(*tid, r); !s) {
    return s.error();
  }
  // Signals wait in the kernel while the thread runs our code: none is taken from it, and
  // they arrive in their order, with their siginfo, once it resumes.
  Result<void> blocked = set_sigmask(*tid, ~uint64_t{0});
  ChainRun run;
  run.tid = *tid;
  Result<long> out = Error{"syscall " + std::to_string(nr) + " did not complete"};
  if (blocked) {
    out = run_chain(run, nr);
  }
  if (!run.alive) {
    return out;
  }
  if (auto back = restore_thread(run, *saved); !back) {
    return back.error();
  }
  if (!blocked) {
    return blocked.error();
  }
  return out;
}

Result<pid_t> StoppedWorld::syscall_thread(long nr, const std::array<uint64_t, 6>& args) {
  const pid_t tid = pick_thread();
  if (tid == 0) {
    return Error{"no thread of pid " + std::to_string(pid_) +
                 " is stopped where a syscall can run (all job-control stopped or in events)"};
  }
  if (auto c = find_chain(); !c) {
    return c.error();
  }
  const auto& chain = tp_.chain_;
  // A thread with a user shadow stack would fault at the chain's `ret` and rt_sigreturn.
  if (thread_has_shadow_stack(tid)) {
    return Error{"thread " + std::to_string(tid) +
                 " uses a shadow stack (CET): profctl cannot run a syscall in it"};
  }
  // The thread's seccomp filters must allow the call, and the rt_sigreturn that restores
  // the thread if profctl dies in the middle.
  if (auto ok = seccomp_allows(tid, {nr, args, chain.syscall_ret + 2}); !ok) {
    return ok.error();
  }
  if (auto ok = seccomp_allows(tid, {SYS_rt_sigreturn, {}, chain.sigreturn_next}); !ok) {
    return ok.error();
  }
  return tid;
}

Result<StoppedWorld::SavedThread> StoppedWorld::save_thread(pid_t tid) {
  SavedThread saved;
  auto regs_now = regs(tid);
  if (!regs_now) {
    return regs_now.error();
  }
  saved.regs = *regs_now;
  auto mask = get_sigmask(tid);
  if (!mask) {
    return mask.error();
  }
  saved.mask = *mask;
  auto text = read_maps_text(pid_);
  if (!text) {
    return text.error();
  }
  const std::vector<MapEntry> maps = parse_maps(*text);
  const MapEntry* stack = find_mapping(maps, saved.regs.rsp - kRedZone);
  if (stack == nullptr || !stack->writable) {
    return Error{"thread " + std::to_string(tid) + "'s stack pointer is not in writable memory"};
  }
  auto frame = build_sigreturn_frame(saved.regs, saved.mask, read_xstate(tid), tp_.chain_.sigreturn,
                                     stack->start);
  if (!frame) {
    return Error{"thread " + std::to_string(tid) + ": " + frame.error().message()};
  }
  if (auto w = write(frame->address, frame->bytes); !w) {
    return w.error();
  }
  saved.frame = frame->address;
  return saved;
}

Result<void> StoppedWorld::chain_step(ChainRun& run) {
  const pid_t tid = run.tid;
  if (ptrace(PTRACE_SYSCALL, tid, nullptr, nullptr) != 0) {
    return errno_error("PTRACE_SYSCALL " + std::to_string(tid));
  }
  auto st = await_chain_stop(tid, run.restop, /*want_interrupt=*/false);
  if (!st) {
    return st.error();  // still running our code: restore_thread's interrupt stops it
  }
  if (!*st) {
    run.alive = false;
    return Error{"thread " + std::to_string(tid) + " exited during a remote syscall"};
  }
  run.info = syscall_info(tid);
  return {};
}

Result<long> StoppedWorld::run_chain(ChainRun& run, long nr) {
  const pid_t tid = run.tid;
  const __ptrace_syscall_info& info = run.info;
  if (auto s = chain_step(run); !s) {
    return s.error();
  }
  if (info.op != PTRACE_SYSCALL_INFO_ENTRY || info.entry.nr != static_cast<uint64_t>(nr) ||
      info.instruction_pointer != tp_.chain_.syscall_ret + 2) {
    // Not our call: undo it before it runs (the kernel skips a syscall whose number the
    // tracer set to -1 at entry) and restore.
    user_regs_struct skip{};
    if (ptrace(PTRACE_GETREGS, tid, nullptr, &skip) == 0) {
      skip.orig_rax = static_cast<unsigned long long>(-1);
      (void)ptrace(PTRACE_SETREGS, tid, nullptr, &skip);
    }
    Result<long> out =
        Error{"thread " + std::to_string(tid) + " did not enter the remote syscall (stop " +
              std::to_string(info.op) + ", nr " + std::to_string(info.entry.nr) + ", ip " +
              std::to_string(info.instruction_pointer) + ")"};
    if (info.op == PTRACE_SYSCALL_INFO_ENTRY) {
      if (auto s = chain_step(run); !s) {
        return s.error();
      }
    }
    return out;
  }
  if (auto s = chain_step(run); !s) {
    return s.error();
  }
  if (info.op != PTRACE_SYSCALL_INFO_EXIT) {
    return Error{"thread " + std::to_string(tid) + " stopped oddly in a remote syscall"};
  }
  return static_cast<long>(info.exit.rval);
}

Result<void> StoppedWorld::restore_thread(ChainRun& run, const SavedThread& saved) {
  const pid_t tid = run.tid;
  // Back into an interrupt stop, where the thread's own registers are restored: its resume
  // then runs the kernel's restart logic on them, exactly as if it had never left.
  if (ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr) != 0) {
    return errno_error("PTRACE_INTERRUPT " + std::to_string(tid));
  }
  // (Fails only when a timeout above left the thread running: the interrupt stops it.)
  (void)ptrace(PTRACE_CONT, tid, nullptr, nullptr);
  for (;;) {
    auto st = await_chain_stop(tid, run.restop, /*want_interrupt=*/true);
    if (!st) {
      return st.error();
    }
    if (!*st) {
      return Error{"thread " + std::to_string(tid) + " exited during a remote syscall"};
    }
    if (at_interrupt_stop(tid)) {
      break;
    }
    // A syscall stop on the way (the chain's rt_sigreturn, if the interrupt came late).
    if (ptrace(PTRACE_CONT, tid, nullptr, nullptr) != 0) {
      return errno_error("PTRACE_CONT " + std::to_string(tid));
    }
  }
  // The mask first: a thread let go between these two calls still runs its sigreturn.
  if (auto s = set_sigmask(tid, saved.mask); !s) {
    return s.error();
  }
  if (auto s = set_regs(tid, saved.regs); !s) {
    return s.error();
  }
  if (run.restop) {
    ::syscall(SYS_tgkill, pid_, tid, SIGSTOP);
  }
  return {};
}

}  // namespace profctl
