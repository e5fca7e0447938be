// SPDX-License-Identifier: MIT
// CpuTimer: CPU-time-driven samples for the cpu profile. One perf software event per target
// thread (PERF_COUNT_SW_TASK_CLOCK, the thread's own CPU clock) overflows every `period` of
// the thread's CPU time and, through fasync (F_SETOWN_EX to that very thread), sends it
// SIGURG. The kernel raises the signal while the thread is on a CPU, so the thread stops
// (a signal-delivery stop, which profctl takes as a sample and never delivers) where the
// CPU really was: a fair draw, as perf's own sampling is. Sampling from a ticker instead
// stops a thread that was waiting for a CPU where it was preempted, which on a busy
// machine is most often a syscall's return: a biased place.
//
// SIGURG because its default action is to be ignored: a signal of ours still pending when
// profctl is gone can only wake a handler the program installed for it (Go programs: a
// preemption request, harmless). Ours are told from the program's by their siginfo
// (si_code POLL_*, si_fd one of our fds); a real SIGURG is delivered as any signal is.
// Needs perf_event_open on the target (root, CAP_PERFMON, or perf_event_paranoid <= 1 for
// one's own processes); without it the session falls back to the ticker.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <utility>

#include "base/fd.h"
#include "base/result.h"

namespace profctl {

class CpuTimer {
 public:
  static constexpr int kSignal = 23;  // SIGURG

  explicit CpuTimer(uint64_t period_ns) : period_ns_(period_ns) {}

  // Arms a thread's timer. An error when perf_event_open is refused.
  Result<void> add(pid_t tid);
  void remove(pid_t tid);
  // Stops every timer; the fds stay, so a signal already raised is still recognised.
  void disable();
  // True when the signal `sig` now pending for stopped thread `tid` is one of ours (read
  // with PTRACE_GETSIGINFO).
  bool is_ours(pid_t tid, int sig) const;
  uint64_t period_ns() const { return period_ns_; }
  size_t armed() const { return events_.size(); }
  // How many times the kernel has put the thread on a CPU since its timer was armed, as far
  // as can be told without a syscall: a count that moves at every one of them (and
  // sometimes between). nullopt when the thread's event page could not be mapped (the
  // locked-memory budget of perf events is spent): ask /proc instead.
  std::optional<uint32_t> sched_ins(pid_t tid) const;

 private:
  // The event's first page, mapped read-only: the kernel rewrites it (perf_event_mmap_page,
  // bumping its `lock`) each time it schedules the event in, i.e. the thread onto a CPU.
  struct Page {
    void* addr = nullptr;
    Page() = default;
    explicit Page(void* a) : addr(a) {}
    Page(Page&& o) noexcept : addr(std::exchange(o.addr, nullptr)) {}
    Page& operator=(Page&& o) noexcept;
    Page(const Page&) = delete;
    Page& operator=(const Page&) = delete;
    ~Page();
  };
  struct Event {
    Fd fd;
    Page page;
  };
  uint64_t period_ns_;
  std::map<pid_t, Event> events_;
};

}  // namespace profctl
