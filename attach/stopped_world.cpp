// SPDX-License-Identifier: MIT
#include "attach/stopped_world.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "attach/proc.h"
#include "attach/seccomp_check.h"
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

Result<uint64_t> StoppedWorld::find_syscall_insn() {
  if (tp_.syscall_insn_ != 0 && tp_.syscall_insn_pid_ == pid_) {
    return tp_.syscall_insn_;
  }
  auto text = read_maps_text(pid_);
  if (!text) {
    return text.error();
  }
  // Any executable mapping holds a `syscall` (0f 05) somewhere: the vDSO's fallbacks, libc.
  std::vector<MapEntry> maps = parse_maps(*text);
  std::stable_partition(maps.begin(), maps.end(),
                        [](const MapEntry& m) { return m.path == "[vdso]"; });
  std::vector<std::byte> buf(1 << 16);
  for (const MapEntry& m : maps) {
    if (!m.executable || m.path == "[vsyscall]") {
      continue;
    }
    for (uint64_t a = m.start; a < m.end; a += buf.size() - 1) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), m.end - a));
      auto n = read(a, std::span(buf.data(), want));
      if (!n || *n < 2) {
        break;
      }
      for (size_t i = 0; i + 1 < *n; ++i) {
        if (buf[i] == std::byte{0x0f} && buf[i + 1] == std::byte{0x05}) {
          tp_.syscall_insn_ = a + i;
          tp_.syscall_insn_pid_ = pid_;
          return a + i;
        }
      }
    }
  }
  return Error{"no syscall instruction found in pid " + std::to_string(pid_)};
}

pid_t StoppedWorld::pick_thread() const {
  // A thread in group-stop would leave it when stepped; prefer one that is not.
  for (pid_t tid : stopped_) {
    const TracedThread* t = tp_.table_.find(tid);
    if (t == nullptr || !t->group_stop) {
      return tid;
    }
  }
  return stopped_.empty() ? 0 : stopped_.front();
}

Result<long> StoppedWorld::syscall(long nr, std::array<uint64_t, 6> args) {
  const pid_t tid = pick_thread();
  if (tid == 0) {
    return Error{"no stopped thread to run a syscall in"};
  }
  auto insn = find_syscall_insn();
  if (!insn) {
    return insn.error();
  }
  if (auto ok = seccomp_allows(tid, {nr, args, *insn + 2}); !ok) {
    return ok.error();
  }
  auto saved = regs(tid);
  if (!saved) {
    return saved.error();
  }
  // A signal the thread was stopped for must not be lost by the step below: take it over
  // from the kernel; it is re-delivered when the thread resumes.
  if (TracedThread* t = tp_.table_.find(tid); t != nullptr && t->signal_in_kernel) {
    tp_.waiter_.consume(Waiter::Event{tid, WaitStatus(), true});
    t->signal_in_kernel = false;
  }
  user_regs_struct r = *saved;
  r.rip = *insn;
  r.rax = static_cast<unsigned long long>(nr);
  // orig_rax = -1: the kernel must not treat the stop as an interrupted syscall to
  // restart (which would move rip back by two); the saved registers restore that state.
  r.orig_rax = static_cast<unsigned long long>(-1);
  r.rdi = args[0];
  r.rsi = args[1];
  r.rdx = args[2];
  r.r10 = args[3];
  r.r8 = args[4];
  r.r9 = args[5];
  if (auto s = set_regs(tid, r); !s) {
    return s.error();
  }
  Result<long> out = Error{"syscall " + std::to_string(nr) + " did not complete"};
  for (int attempt = 0; attempt < 16; ++attempt) {
    if (ptrace(PTRACE_SINGLESTEP, tid, nullptr, nullptr) != 0) {
      out = errno_error("PTRACE_SINGLESTEP " + std::to_string(tid));
      break;
    }
    auto ev = tp_.waiter_.next_for(tid, std::chrono::milliseconds(2000));
    if (!ev) {
      out = Error{"thread " + std::to_string(tid) + " did not finish a remote syscall"};
      break;
    }
    if (!ev->status.stopped()) {
      tp_.on_status(*ev);  // it died: the table learns it
      out = Error{"thread " + std::to_string(tid) + " exited during a remote syscall"};
      return out;
    }
    auto now = regs(tid);
    if (ev->pending_in_kernel) {
      tp_.waiter_.consume(*ev);
    }
    if (ev->status.kind() == WaitStatus::Kind::kSignalStop && ev->status.signal() != SIGTRAP) {
      // A signal for the target arrived first: keep it for the resume, step again.
      if (TracedThread* t = tp_.table_.find(tid)) {
        t->pending_signal = ev->status.signal();
      }
      continue;
    }
    if (now && now->rip == *insn + 2) {
      out = static_cast<long>(now->rax);
      break;
    }
  }
  if (auto s = set_regs(tid, *saved); !s) {
    return s.error();
  }
  return out;
}

}  // namespace profctl
