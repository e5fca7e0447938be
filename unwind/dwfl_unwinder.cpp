// SPDX-License-Identifier: MIT
#include "unwind/dwfl_unwinder.h"

#include <elfutils/libdwfl.h>
#include <fcntl.h>
#include <gelf.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <optional>
#include <vector>

#include "base/log.h"
#include "unwind/module_refresh.h"
#include "unwind/x86_64_regs.h"

namespace profctl {
namespace {

constexpr size_t kDefaultMaxFrames = 65536;

// The context libdwfl hands back to the thread callbacks (dwfl_arg). It is owned by the
// Dwfl: dwfl_attach_state cannot be undone, so the context must live as long as the Dwfl
// does, and the `detach` callback (run by dwfl_end) deletes it.
struct UnwindCtx {
  const Snapshot* cur = nullptr;  // the snapshot being unwound, only during unwind()
  // Set by memory_read when libdwfl asked for bytes at or past the end of the copy: if the
  // walk then fails, the copy size is why.
  bool read_past_copy = false;
  // Whether the last read failed, and where. libdwfl 0.188 ends a walk "normally" (rc 0,
  // pc undefined) when it cannot read a return address, so a walk that ends right after
  // a failed read ended for want of bytes, not at the outermost frame.
  bool last_read_failed = false;
  uint64_t last_failed_addr = 0;
  uint64_t reads = 0;
};

pid_t next_thread(Dwfl*, void* dwfl_arg, void** thread_argp) {
  auto* ctx = static_cast<UnwindCtx*>(dwfl_arg);
  if (*thread_argp != nullptr || ctx->cur == nullptr) {
    return 0;
  }
  *thread_argp = ctx;
  return ctx->cur->tid;
}

bool get_thread(Dwfl*, pid_t tid, void* dwfl_arg, void** thread_argp) {
  auto* ctx = static_cast<UnwindCtx*>(dwfl_arg);
  *thread_argp = ctx;
  return ctx->cur != nullptr && tid == ctx->cur->tid;
}

// Serves reads from the snapshot's stack copy only: the target has been resumed and its
// live memory has moved on. The snapshot comes from the target, so nothing about it is
// trusted: the size is checked against the copy, and no sum may overflow.
bool memory_read(Dwfl*, Dwarf_Addr addr, Dwarf_Word* result, void* dwfl_arg) {
  auto* ctx = static_cast<UnwindCtx*>(dwfl_arg);
  const Snapshot* s = ctx->cur;
  ctx->last_read_failed = true;
  ctx->last_failed_addr = addr;
  if (s == nullptr || s->stack_bytes == nullptr) {
    return false;
  }
  const uint64_t base = s->stack_base;
  const uint64_t size = s->stack_size;
  constexpr uint64_t kWord = sizeof(Dwarf_Word);
  if (addr < base) {
    return false;
  }
  const uint64_t off = addr - base;  // no overflow: addr >= base
  if (size < kWord || off > size - kWord) {
    // Past the end of the copy (the stack grows down, so the callers' frames are there).
    ctx->read_past_copy = true;
    return false;
  }
  std::memcpy(result, s->stack_bytes.get() + off, kWord);
  ctx->last_read_failed = false;
  ++ctx->reads;
  return true;
}

bool set_initial_registers(Dwfl_Thread* thread, void* thread_arg) {
  auto* ctx = static_cast<UnwindCtx*>(thread_arg);
  if (ctx->cur == nullptr) {
    return false;
  }
  const X86_64DwarfRegs regs = x86_64_dwarf_regs(ctx->cur->regs);
  static_assert(sizeof(Dwarf_Word) == sizeof(uint64_t));
  // rip is DWARF register 16 on x86-64, so this sets the pc too.
  return dwfl_thread_state_registers(thread, 0, kX86_64DwarfRegs,
                                     reinterpret_cast<const Dwarf_Word*>(regs.data()));
}

void detach(Dwfl*, void* dwfl_arg) { delete static_cast<UnwindCtx*>(dwfl_arg); }

constexpr Dwfl_Thread_Callbacks kThreadCallbacks{
    .next_thread = next_thread,
    .get_thread = get_thread,
    .memory_read = memory_read,
    .set_initial_registers = set_initial_registers,
    .detach = detach,
    .thread_detach = nullptr,
};

struct Walk {
  size_t max_frames = 0;
  UnwindResult* out = nullptr;
  uint64_t last_pc = 0;
  uint64_t last_sp = 0;
  bool have_sp = false;
  bool looped = false;
  bool hit_limit = false;
  std::string pc_error;
};

int frame_cb(Dwfl_Frame* state, void* arg) {
  auto* w = static_cast<Walk*>(arg);
  Dwarf_Addr pc = 0;
  bool activation = false;
  if (!dwfl_frame_pc(state, &pc, &activation)) {
    w->pc_error = dwfl_errmsg(-1);
    return DWARF_CB_ABORT;
  }
  // A frame with the same pc and stack pointer as the one before makes no progress: a
  // corrupt or self-referencing stack. Stop rather than repeat it max_frames times.
  Dwarf_Word sp = 0;
  bool have_sp = dwfl_frame_reg(state, kX86_64DwarfRsp, &sp) == 0;
  if (!w->out->frames.empty() && have_sp && w->have_sp && pc == w->last_pc && sp == w->last_sp) {
    w->looped = true;
    return DWARF_CB_ABORT;
  }
  w->last_pc = pc;
  w->last_sp = sp;
  w->have_sp = have_sp;
  w->out->frames.push_back({pc, activation});
  if (w->out->frames.size() >= w->max_frames) {
    w->hit_limit = true;
    return DWARF_CB_ABORT;
  }
  return DWARF_CB_OK;
}

}  // namespace

struct DwflUnwinder::Impl {
  TargetDwfl& target;
  size_t max_frames;
  UnwindCtx* ctx = nullptr;  // owned by the Dwfl once attached (deleted by `detach`)
  std::string attach_error;  // set when attaching failed; every unwind reports it
  ModuleRefresh refresh_for;  // a pc in no module: re-read the maps now or not
  UnwindResult unwind_once(const Snapshot& snap);
};

DwflUnwinder::DwflUnwinder(TargetDwfl& dwfl, size_t max_frames)
    : impl_(std::make_unique<Impl>(
          Impl{dwfl, max_frames == 0 ? kDefaultMaxFrames : max_frames, nullptr, {},
               ModuleRefresh(dwfl)})) {}

DwflUnwinder::~DwflUnwinder() {
  // The context stays with the Dwfl (it cannot be detached); make sure nothing it points
  // to dangles.
  if (impl_->ctx != nullptr) {
    impl_->ctx->cur = nullptr;
  }
}

UnwindResult DwflUnwinder::unwind(const Snapshot& snap) {
  UnwindResult out = impl_->unwind_once(snap);
  TargetDwfl& target = impl_->target;
  if (target.pid() <= 0 || impl_->ctx == nullptr) {
    return out;
  }
  // A pc in no known module (or a walk cut short, whose next pc may be one): the maps
  // again, and the walk again if the modules changed.
  std::optional<uint64_t> unknown;
  for (const UnwoundFrame& f : out.frames) {
    if (!target.has_module_at(f.pc)) {
      unknown = f.pc;
      break;
    }
  }
  if (!unknown && out.truncated) {
    unknown = out.frames.empty() ? snap.regs.rip : out.frames.back().pc;
  }
  if (unknown && impl_->refresh_for(*unknown)) {
    out = impl_->unwind_once(snap);
  }
  if (out.frames.size() == 1) {
    out = retry_from_entry(snap, std::move(out));
  }
  return out;
}

// A pc with no CFI that stops the walk at once is most often a syscall stub that ends its
// FDE before the syscall: glibc's clone3.S and clone.S do ("in the child the unwind info
// will be wrong"), so a thread stopped at its clone() — threadcreate's very moment — would
// unwind to one frame. Such stubs push nothing before the syscall: [rsp] is the return
// address, as at a function's entry. Unwind again from there; keep it only if it got
// further and the return address lands in a known module.
UnwindResult DwflUnwinder::retry_from_entry(const Snapshot& snap, UnwindResult first) {
  if (snap.stack_size < 16 || impl_->ctx == nullptr) {
    return first;
  }
  uint64_t ret = 0;
  std::memcpy(&ret, snap.stack_bytes.get(), sizeof ret);
  if (ret == 0) {
    return first;
  }
  if (!impl_->target.has_module_at(ret - 1) &&
      (!impl_->refresh_for(ret - 1) || !impl_->target.has_module_at(ret - 1))) {
    return first;
  }
  Snapshot alt;
  alt.pid = snap.pid;
  alt.tid = snap.tid;
  alt.regs = snap.regs;
  alt.regs.rip = ret;
  alt.regs.rsp = snap.regs.rsp + 8;
  alt.stack_base = snap.stack_base + 8;
  alt.stack_size = snap.stack_size - 8;
  alt.stack_bytes = std::make_unique_for_overwrite<std::byte[]>(alt.stack_size);
  std::memcpy(alt.stack_bytes.get(), snap.stack_bytes.get() + 8, alt.stack_size);
  alt.stack_end = snap.stack_end;
  alt.stack_cut = snap.stack_cut;
  alt.stack_cut_reason = snap.stack_cut_reason;
  UnwindResult second = impl_->unwind_once(alt);
  if (second.frames.empty()) {
    return first;
  }
  second.frames.front().activation = false;  // a return address, not the pc itself
  second.frames.insert(second.frames.begin(), first.frames.front());
  return second;
}

namespace {

// An x86-64 ELF for dwfl_attach_state to take the architecture from: profctl's own
// executable, opened once and never closed. Given no ELF, libdwfl takes the first module's
// it can open, which in a process caught mid-exec, or whose files change, can be one that
// is not the target's architecture at all (libdwfl then asserts on the register count).
// profctl unwinds x86-64 only, so the architecture is known.
Elf* architecture_elf() {
  static Elf* elf = [] {
    elf_version(EV_CURRENT);
    const int fd = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    Elf* e = fd >= 0 ? elf_begin(fd, ELF_C_READ_MMAP, nullptr) : nullptr;
    GElf_Ehdr eh;
    if (e != nullptr && (gelf_getehdr(e, &eh) == nullptr || eh.e_machine != EM_X86_64)) {
      elf_end(e);
      e = nullptr;
    }
    return e;  // the fd stays open with it
  }();
  return elf;
}

}  // namespace

UnwindResult DwflUnwinder::Impl::unwind_once(const Snapshot& snap) {
  UnwindResult out;
  Impl* impl_ = this;
  Dwfl* dwfl = impl_->target.get();
  if (impl_->ctx == nullptr && impl_->attach_error.empty()) {
    // Once per Dwfl, after the modules are reported.
    auto ctx = std::make_unique<UnwindCtx>();
    pid_t pid = impl_->target.pid() > 0 ? impl_->target.pid() : snap.pid;
    static std::mutex attach_mu;  // the shared ELF above: one reader at a time
    std::unique_lock attach_lock(attach_mu);
    if (dwfl_attach_state(dwfl, architecture_elf(), pid, &kThreadCallbacks, ctx.get())) {
      impl_->ctx = ctx.release();
    } else {
      // Also the error when another DwflUnwinder already attached to this Dwfl.
      impl_->attach_error = std::string("dwfl_attach_state: ") + dwfl_errmsg(-1);
      logger("unwind")->debug("{}", impl_->attach_error);
    }
  }
  if (impl_->ctx == nullptr) {
    out.truncated = true;
    out.reason = impl_->attach_error;
    return out;
  }

  UnwindCtx& ctx = *impl_->ctx;
  ctx.cur = &snap;
  ctx.read_past_copy = false;
  ctx.last_read_failed = false;
  ctx.reads = 0;
  Walk walk;
  walk.max_frames = impl_->max_frames;
  walk.out = &out;
  int rc = dwfl_getthread_frames(dwfl, snap.tid, frame_cb, &walk);
  std::string err = rc == -1 ? dwfl_errmsg(-1) : std::string();
  ctx.cur = nullptr;

  if (walk.hit_limit) {
    out.truncated = true;
    out.reason = "stopped at max frames (" + std::to_string(impl_->max_frames) + ")";
  } else if (walk.looped) {
    out.truncated = true;
    out.reason = "unwinding loop: a frame repeats the one before";
  } else if (!walk.pc_error.empty()) {
    out.truncated = true;
    out.reason = walk.pc_error;
  } else if (rc != 0 || ctx.last_read_failed) {
    // rc -1 also ends stacks whose outermost frame is not marked by CFI (libdwfl.h): keep
    // the frames found so far and say why the walk stopped.
    out.truncated = true;
    if (ctx.read_past_copy && snap.stack_cut) {
      out.reason = "stack copy too small: " + snap.stack_cut_reason;
    } else if (rc == 0) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "cannot read stack at 0x%" PRIx64 " (outside the copy)",
                    ctx.last_failed_addr);
      out.reason = buf;
    } else if (!err.empty()) {
      out.reason = err;
    } else {
      out.reason = "unwinding stopped";
    }
  }
  logger("unwind")->trace("tid {}: {} frames, {} reads, rc {}", snap.tid, out.frames.size(),
                          ctx.reads, rc);
  return out;
}

}  // namespace profctl
