// SPDX-License-Identifier: MIT
#include "attach/perf_sampler.h"

#include <asm/perf_regs.h>
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <ctime>

namespace profctl {
namespace {

// The user registers a record carries: every general register the unwinder may need. DS,
// ES, FS and GS are not offered on x86-64 (the kernel refuses a mask with them).
constexpr uint64_t kRegsMask =
    ((1ULL << (PERF_REG_X86_SS + 1)) - 1) |
    (((1ULL << (PERF_REG_X86_R15 - PERF_REG_X86_R8 + 1)) - 1) << PERF_REG_X86_R8);
constexpr size_t kNumRegs = std::popcount(kRegsMask);
constexpr uint32_t kMaxStackBytes = 65528;  // the kernel's cap (a record's size is 16 bits)

// perf_event_x86_regs index -> user_regs_struct field.
void set_reg(user_regs_struct& r, int idx, uint64_t v) {
  switch (idx) {
    case PERF_REG_X86_AX:
      r.rax = v;
      break;
    case PERF_REG_X86_BX:
      r.rbx = v;
      break;
    case PERF_REG_X86_CX:
      r.rcx = v;
      break;
    case PERF_REG_X86_DX:
      r.rdx = v;
      break;
    case PERF_REG_X86_SI:
      r.rsi = v;
      break;
    case PERF_REG_X86_DI:
      r.rdi = v;
      break;
    case PERF_REG_X86_BP:
      r.rbp = v;
      break;
    case PERF_REG_X86_SP:
      r.rsp = v;
      break;
    case PERF_REG_X86_IP:
      r.rip = v;
      break;
    case PERF_REG_X86_FLAGS:
      r.eflags = v;
      break;
    case PERF_REG_X86_CS:
      r.cs = v;
      break;
    case PERF_REG_X86_SS:
      r.ss = v;
      break;
    case PERF_REG_X86_R8:
      r.r8 = v;
      break;
    case PERF_REG_X86_R9:
      r.r9 = v;
      break;
    case PERF_REG_X86_R10:
      r.r10 = v;
      break;
    case PERF_REG_X86_R11:
      r.r11 = v;
      break;
    case PERF_REG_X86_R12:
      r.r12 = v;
      break;
    case PERF_REG_X86_R13:
      r.r13 = v;
      break;
    case PERF_REG_X86_R14:
      r.r14 = v;
      break;
    case PERF_REG_X86_R15:
      r.r15 = v;
      break;
    default:
      break;
  }
}

}  // namespace

struct PerfSampler::Ring {
  Fd fd;
  std::byte* base = nullptr;  // the metadata page; the data follows it
  size_t map_bytes = 0;
  size_t data_bytes = 0;  // a power of two
  pid_t tid = 0;
  uint64_t last_count = 0;  // the clock's count at the previous record
  RunState run;             // from the switch records drained so far
  ~Ring() {
    if (base != nullptr) {
      munmap(base, map_bytes);
    }
  }
  perf_event_mmap_page* meta() const { return reinterpret_cast<perf_event_mmap_page*>(base); }
  // Copies `len` bytes at ring position `pos` (wrapping) into `out`.
  void copy(uint64_t pos, void* out, size_t len) const {
    const std::byte* data = base + (map_bytes - data_bytes);
    const size_t off = pos & (data_bytes - 1);
    const size_t first = std::min(len, data_bytes - off);
    std::memcpy(out, data + off, first);
    if (first < len) {
      std::memcpy(static_cast<std::byte*>(out) + first, data, len - first);
    }
  }
};

PerfSampler::PerfSampler(uint64_t period_ns, uint32_t stack_bytes)
    : period_ns_(period_ns),
      stack_bytes_(std::min(kMaxStackBytes, std::max<uint32_t>(64, stack_bytes)) & ~7u) {
  // Room for a few records: the rings are drained every tick, and a thread's clock cannot
  // overflow much more than once a tick, so three records leave two late ticks of margin.
  // Plus room for a tick's switch records (8 bytes each: 2048 is a thread switching 200,000
  // times a second at 99 Hz). With the default 32 KiB stacks that is 128 KiB; four records
  // made it 256 KiB, whose pages the kernel clears at each thread's mmap: on a fork+exec
  // loop that was ~0.5 ms per new process on the tracer's critical path (bench/TREE.md).
  const size_t record = stack_bytes_ + 64 + 8 * kNumRegs;
  ring_data_bytes_ = std::bit_ceil(3 * record + 2048 * 8);
}

PerfSampler::~PerfSampler() = default;

Result<void> PerfSampler::add(pid_t tid) {
  if (rings_.count(tid) != 0) {
    return {};
  }
  perf_event_attr attr{};
  attr.size = sizeof attr;
  attr.type = PERF_TYPE_SOFTWARE;
  attr.config = PERF_COUNT_SW_TASK_CLOCK;
  attr.sample_period = period_ns_;
  attr.sample_type = PERF_SAMPLE_IP | PERF_SAMPLE_TID | PERF_SAMPLE_TIME | PERF_SAMPLE_READ |
                     PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER;
  attr.sample_regs_user = kRegsMask;
  attr.sample_stack_user = stack_bytes_;
  // The exec marks where a thread's records pass from its old image to its new one.
  attr.comm = 1;
  attr.comm_exec = 1;
  // A record at each executable mapping the thread makes (take_mapped).
  attr.mmap = 1;
  attr.use_clockid = 1;
  attr.clockid = CLOCK_MONOTONIC;
  attr.disabled = 1;
  // No wakeups: nobody polls the rings, they are drained at the ticks.
  attr.watermark = 1;
  attr.wakeup_watermark = static_cast<uint32_t>(ring_data_bytes_);
  // An 8-byte record at each switch in and out: run_state() (Linux 4.3+; without it the
  // state stays unknown and the session reads /proc instead).
  attr.context_switch = 1;
  long fd = syscall(SYS_perf_event_open, &attr, tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
  if (fd < 0 && errno == EINVAL) {
    attr.context_switch = 0;
    fd = syscall(SYS_perf_event_open, &attr, tid, -1, -1, PERF_FLAG_FD_CLOEXEC);
  }
  if (fd < 0) {
    return errno_error("perf_event_open (task clock, sample records) for thread " +
                       std::to_string(tid));
  }
  auto ring = std::make_unique<Ring>();
  ring->fd = Fd(static_cast<int>(fd));
  ring->tid = tid;
  const auto page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  ring->data_bytes = std::max(ring_data_bytes_, page);
  ring->map_bytes = page + ring->data_bytes;
  void* m = mmap(nullptr, ring->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, ring->fd.get(), 0);
  if (m == MAP_FAILED) {
    return errno_error("mapping the sample ring of thread " + std::to_string(tid) +
                       " (locked-memory limit: perf_event_mlock_kb)");
  }
  ring->base = static_cast<std::byte*>(m);
  if (ioctl(ring->fd.get(), PERF_EVENT_IOC_ENABLE, 0) != 0) {
    return errno_error("enabling the sample event of thread " + std::to_string(tid));
  }
  rings_[tid] = std::move(ring);
  return {};
}

void PerfSampler::remove(pid_t tid, const std::function<void(PerfSample&&)>& fn) {
  auto it = rings_.find(tid);
  if (it == rings_.end()) {
    return;
  }
  drain_ring(*it->second, fn);
  rings_.erase(it);
}

size_t PerfSampler::drain(pid_t tid, const std::function<void(PerfSample&&)>& fn, bool until_exec) {
  auto it = rings_.find(tid);
  return it == rings_.end() ? 0 : drain_ring(*it->second, fn, until_exec);
}

size_t PerfSampler::drain_all(const std::function<void(PerfSample&&)>& fn) {
  size_t n = 0;
  for (auto& [tid, ring] : rings_) {
    n += drain_ring(*ring, fn);
  }
  return n;
}

RunState PerfSampler::run_state(pid_t tid) const {
  auto it = rings_.find(tid);
  return it == rings_.end() ? RunState{} : it->second->run;
}

void PerfSampler::disable() {
  for (auto& [tid, ring] : rings_) {
    (void)ioctl(ring->fd.get(), PERF_EVENT_IOC_DISABLE, 0);
  }
}

// Record layout for our sample_type (linux/perf_event.h, PERF_RECORD_SAMPLE):
//   header; u64 ip; u32 pid, tid; u64 time; u64 value (READ, read_format 0: the clock's
//   count); u64 abi; u64 regs[popcount(mask)] (absent when abi is NONE); u64 size;
//   char data[size]; u64 dyn_size (absent when size is 0).
size_t PerfSampler::drain_ring(Ring& r, const std::function<void(PerfSample&&)>& fn,
                               bool until_exec) {
  perf_event_mmap_page* meta = r.meta();
  const uint64_t head = __atomic_load_n(&meta->data_head, __ATOMIC_ACQUIRE);
  uint64_t tail = meta->data_tail;
  size_t n = 0;
  if (head - tail > r.data_bytes) {
    ++malformed_;  // cannot happen with a kernel that keeps its own ring straight
    tail = head;
  }
  while (tail < head) {
    perf_event_header h{};
    if (head - tail < sizeof h) {
      ++malformed_;
      break;
    }
    r.copy(tail, &h, sizeof h);
    if (h.size < sizeof h || h.size > head - tail) {
      ++malformed_;
      tail = head;
      break;
    }
    auto field = [&](size_t off, void* out, size_t len) {
      if (off + len > h.size) {
        return false;
      }
      r.copy(tail + off, out, len);
      return true;
    };
    if (h.type == PERF_RECORD_COMM && (h.misc & PERF_RECORD_MISC_COMM_EXEC) != 0 && until_exec) {
      tail += h.size;  // the records after it are the new image's
      break;
    }
    if (h.type == PERF_RECORD_SWITCH) {
      if ((h.misc & PERF_RECORD_MISC_SWITCH_OUT) == 0) {
        ++r.run.ins;
        r.run.runnable = true;
      } else {
        r.run.runnable = (h.misc & PERF_RECORD_MISC_SWITCH_OUT_PREEMPT) != 0;
      }
      r.run.known = true;
    } else if (h.type == PERF_RECORD_MMAP) {
      // u32 pid, tid; u64 addr, len, pgoff; char filename[]
      uint32_t pid_tid[2] = {0, 0};
      uint64_t addr = 0;
      if (field(8, pid_tid, 8) && field(16, &addr, 8) && mapped_.size() < 4096) {
        mapped_.emplace_back(static_cast<pid_t>(pid_tid[0]), addr);
      }
    } else if (h.type == PERF_RECORD_LOST) {
      uint64_t lost = 0;
      if (field(16, &lost, 8)) {
        lost_ += lost;
      }
      // Switches may be among the lost: unknown until the next one, and counted as a run.
      r.run.known = false;
      ++r.run.ins;
    } else if (h.type == PERF_RECORD_SAMPLE) {
      PerfSample s;
      uint32_t pid_tid[2] = {0, 0};
      uint64_t abi = 0;
      uint64_t count = 0;
      size_t off = 8 + 8;  // header, ip
      bool ok = field(off, pid_tid, 8) && field(off + 8, &s.time_ns, 8) &&
                field(off + 16, &count, 8) && field(off + 24, &abi, 8);
      off += 32;
      if (ok) {
        // Counted even when the record is unusable: the next one must not carry its time.
        s.cpu_ns = count - std::min(count, r.last_count);
        r.last_count = std::max(count, r.last_count);
      }
      if (ok && abi == PERF_SAMPLE_REGS_ABI_NONE) {
        ++no_user_regs_;
        ok = false;
      }
      uint64_t regs[kNumRegs] = {};
      ok = ok && field(off, regs, sizeof regs);
      off += sizeof regs;
      uint64_t size = 0;
      ok = ok && field(off, &size, 8);
      off += 8;
      uint64_t dyn = 0;
      ok = ok && size <= stack_bytes_ && field(off + size, &dyn, 8) && dyn <= size;
      if (ok) {
        s.pid = static_cast<pid_t>(pid_tid[0]);
        s.tid = static_cast<pid_t>(pid_tid[1]);
        Snapshot& snap = s.snap;
        snap.pid = s.pid;
        snap.tid = s.tid;
        size_t i = 0;
        for (int bit = 0; bit < 64; ++bit) {
          if ((kRegsMask >> bit) & 1) {
            set_reg(snap.regs, bit, regs[i++]);
          }
        }
        snap.stack_base = snap.regs.rsp;
        snap.stack_size = dyn;
        snap.stack_bytes = std::make_unique<std::byte[]>(std::max<size_t>(dyn, 1));
        r.copy(tail + off, snap.stack_bytes.get(), dyn);
        snap.stack_end = snap.stack_base + dyn;
        // A full copy may have cut the stack; a shorter one ran into its end.
        snap.stack_cut = dyn == stack_bytes_;
        if (snap.stack_cut) {
          snap.stack_cut_reason = "perf sample stack of " + std::to_string(stack_bytes_) + " bytes";
        }
        fn(std::move(s));
        ++n;
      } else if (abi != PERF_SAMPLE_REGS_ABI_NONE) {
        ++malformed_;
      }
    }
    tail += h.size;
  }
  __atomic_store_n(&meta->data_tail, tail, __ATOMIC_RELEASE);
  return n;
}

}  // namespace profctl
