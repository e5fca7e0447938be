// SPDX-License-Identifier: MIT
#include "attach/cpu_timer.h"

#include <fcntl.h>
#include <linux/perf_event.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace profctl {

static_assert(CpuTimer::kSignal == SIGURG);

Result<void> CpuTimer::add(pid_t tid) {
  perf_event_attr attr{};
  attr.size = sizeof attr;
  attr.type = PERF_TYPE_SOFTWARE;
  attr.config = PERF_COUNT_SW_TASK_CLOCK;
  attr.sample_period = period_ns_;
  attr.wakeup_events = 1;
  attr.disabled = 1;
  const long fd = syscall(SYS_perf_event_open, &attr, tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
  if (fd < 0) {
    return errno_error("perf_event_open (task clock) for thread " + std::to_string(tid));
  }
  Fd owned(static_cast<int>(fd));
  f_owner_ex owner{F_OWNER_TID, tid};
  if (fcntl(owned.get(), F_SETOWN_EX, &owner) != 0 || fcntl(owned.get(), F_SETSIG, kSignal) != 0 ||
      fcntl(owned.get(), F_SETFL, O_ASYNC) != 0) {
    return errno_error("arming the CPU timer of thread " + std::to_string(tid));
  }
  // Free-running: a signal at every period of the thread's CPU. At most one of ours is
  // ever pending per thread all the same (SIGURG is not queued: a second overflow before
  // the stop is merged into the first, and the samples weigh schedstat's CPU, not periods),
  // and a stopped thread's clock does not advance. Re-arming after each sample instead
  // (PERF_EVENT_IOC_REFRESH, event_limit 1) cost an ioctl and an IPI to the thread's CPU
  // per sample (bench/SAMPLING.md).
  if (ioctl(owned.get(), PERF_EVENT_IOC_ENABLE, 0) != 0) {
    return errno_error("enabling the CPU timer of thread " + std::to_string(tid));
  }
  // Only the header page, no ring: the kernel has nothing to write there but its counters.
  // Refused (ENOMEM/EPERM once perf_event_mlock_kb is spent): the session reads /proc.
  void* page = mmap(nullptr, static_cast<size_t>(sysconf(_SC_PAGESIZE)), PROT_READ, MAP_SHARED,
                    owned.get(), 0);
  events_[tid] = Event{std::move(owned), Page(page == MAP_FAILED ? nullptr : page)};
  return {};
}

CpuTimer::Page& CpuTimer::Page::operator=(Page&& o) noexcept {
  if (this != &o) {
    Page gone(std::move(*this));
    addr = std::exchange(o.addr, nullptr);
  }
  return *this;
}

CpuTimer::Page::~Page() {
  if (addr != nullptr) {
    munmap(addr, static_cast<size_t>(sysconf(_SC_PAGESIZE)));
  }
}

void CpuTimer::remove(pid_t tid) { events_.erase(tid); }

void CpuTimer::disable() {
  for (auto& [tid, ev] : events_) {
    (void)ioctl(ev.fd.get(), PERF_EVENT_IOC_DISABLE, 0);
  }
}

std::optional<uint32_t> CpuTimer::sched_ins(pid_t tid) const {
  auto it = events_.find(tid);
  if (it == events_.end() || it->second.page.addr == nullptr) {
    return std::nullopt;
  }
  // perf_event_update_userpage() makes `lock` odd while it writes and even after: any change
  // says the event was scheduled in (or otherwise updated) since the last read. A torn read
  // only ever shows a change, which costs a look at /proc, never a missed one.
  const auto* pg = static_cast<const perf_event_mmap_page*>(it->second.page.addr);
  return __atomic_load_n(&pg->lock, __ATOMIC_ACQUIRE);
}

bool CpuTimer::is_ours(pid_t tid, int sig) const {
  if (sig != kSignal) {
    return false;
  }
  siginfo_t si{};
  if (ptrace(PTRACE_GETSIGINFO, tid, nullptr, &si) != 0) {
    return false;
  }
  // fasync signals carry the band in si_code (POLL_IN..POLL_HUP) and the fd in si_fd; a
  // SIGURG sent by kill/tgkill (SI_USER, SI_TKILL) or by the socket layer (SI_KERNEL... no
  // si_fd of ours) is the program's.
  if (si.si_code < POLL_IN || si.si_code > POLL_HUP) {
    return false;
  }
  auto it = events_.find(tid);
  return it != events_.end() && si.si_fd == it->second.fd.get();
}

}  // namespace profctl
