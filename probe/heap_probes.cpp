#include "probe/heap_probes.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "attach/proc.h"
#include "attach/stopped_world.h"
#include "base/log.h"
#include "probe/abi/probe_abi.h"
#include "probe/code_area.h"
#include "probe/elf_symbols.h"

namespace profctl::probe {
namespace {

constexpr long kMapFixedNoReplace = 0x100000;  // MAP_FIXED_NOREPLACE (Linux 4.17)
constexpr long kMadvWipeOnFork = 18;           // MADV_WIPEONFORK (Linux 4.14)
constexpr uint64_t kPage = 4096;

struct Want {
  const char* name;
  uint32_t kind;
};
constexpr Want kHeapFunctions[] = {
    {"malloc", PROBE_KIND_MALLOC},
    {"calloc", PROBE_KIND_CALLOC},
    {"realloc", PROBE_KIND_REALLOC},
    {"reallocarray", PROBE_KIND_REALLOCARRAY},
    {"free", PROBE_KIND_FREE},
    {"posix_memalign", PROBE_KIND_POSIX_MEMALIGN},
    {"aligned_alloc", PROBE_KIND_ALIGNED_ALLOC},
    {"memalign", PROBE_KIND_MEMALIGN},
    {"valloc", PROBE_KIND_VALLOC},
    {"pvalloc", PROBE_KIND_PVALLOC},
};

std::string hex(uint64_t v) {
  char b[32];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

// A remote syscall's raw result as a Result: -4095..-1 are errnos.
Result<uint64_t> checked(Result<long> r, const std::string& what) {
  if (!r) {
    return r.error();
  }
  if (*r < 0 && *r > -4096) {
    return Error{what + " in the target", static_cast<int>(-*r)};
  }
  return static_cast<uint64_t>(*r);
}

struct Found {
  std::string name;
  uint32_t kind;
  uint64_t address;
  uint64_t size;
};

}  // namespace

Result<std::shared_ptr<HeapProbes>> HeapProbes::install(TracedProcess& tp,
                                                        const HeapProbeOptions& o) {
  auto world = tp.stop_world();
  if (!world) {
    return world.error();
  }
  StoppedWorld& w = **world;
  if (w.stopped().empty()) {
    return Error{"no thread of pid " + std::to_string(tp.pid()) + " could be stopped"};
  }
  // The shared area is a memfd the target creates: its name must be in target memory, so
  // the code areas are mapped first and the name borrows one of them.
  // (install_in does it all; on failure it undoes what it did.)
  SharedAreaOptions so;
  so.mem_rate = o.mem_rate;
  so.stack_bytes = o.stack_bytes;
  so.ring_bytes = o.ring_bytes;
  so.pointer_capacity = o.pointer_capacity;
  so.owner_pid = tp.pid();
  // The SharedArea is created inside install_in (from the target's memfd); start empty.
  std::shared_ptr<HeapProbes> self(new HeapProbes());
  self->pid_ = tp.pid();
  self->options_ = so;
  if (auto r = self->install_in(w, tp); !r) {
    self->remove(w);
    return r.error();
  }
  // From here on every exit path that detaches restores the target.
  std::weak_ptr<HeapProbes> weak = self;
  tp.add_detach_hook([self](StoppedWorld& world) { return self->remove(world); });
  tp.set_child_hook([weak](const ChildHookArgs& child, StoppedWorld& cw) {
    if (auto s = weak.lock(); s && !child.shares_vm) {
      s->clean_child(cw);
    }
  });
  TracedProcess::ThreadHooks hooks;
  hooks.on_new_thread = [weak](pid_t tid, const user_regs_struct& regs) {
    if (auto s = weak.lock()) {
      s->register_thread(tid, regs);
    }
  };
  hooks.on_thread_exit = [weak](pid_t tid) {
    if (auto s = weak.lock()) {
      auto it = s->thread_pointers_.find(tid);
      if (it != s->thread_pointers_.end()) {
        s->area_.forget_thread(it->second);
        s->thread_pointers_.erase(it);
      }
    }
  };
  hooks.on_trap = [weak](pid_t tid) {
    auto s = weak.lock();
    return s && s->on_trap(tid);
  };
  hooks.on_exec = [weak] {
    if (auto s = weak.lock()) {
      s->exec_.store(true);
    }
  };
  tp.set_thread_hooks(std::move(hooks));
  return self;
}

Result<void> HeapProbes::install_in(StoppedWorld& w, TracedProcess& tp) {
  auto log = logger("probe");
  auto maps_text = read_maps_text(w.pid());
  if (!maps_text) {
    return maps_text.error();
  }
  maps_ = parse_maps(*maps_text);
  const std::string root = "/proc/" + std::to_string(w.pid()) + "/root";

  // Modules in the order the dynamic linker searches them: the executable first, then the
  // libraries as they were mapped.
  std::vector<std::string> modules;
  const std::string exe = read_exe(tp.pid());
  std::set<std::string> seen;
  for (const MapEntry& m : maps_) {
    if (!m.path.empty() && m.path[0] == '/' && seen.insert(m.path).second) {
      modules.push_back(m.path);
    }
  }
  std::stable_partition(modules.begin(), modules.end(),
                        [&](const std::string& p) { return p == exe; });

  std::map<std::string, std::vector<Found>> by_module;
  std::set<std::string> missing;
  for (const Want& want : kHeapFunctions) {
    missing.insert(want.name);
  }
  for (const std::string& path : modules) {
    if (missing.empty()) {
      break;
    }
    std::vector<std::string> names(missing.begin(), missing.end());
    auto syms = read_elf_functions(root + path, names);
    if (!syms) {
      continue;  // not an ELF we can read (a data file mapped executable, a deleted file)
    }
    auto bias = load_bias(*syms, maps_, path);
    if (!bias) {
      continue;
    }
    for (const Want& want : kHeapFunctions) {
      auto it = syms->functions.find(want.name);
      if (!missing.count(want.name) || it == syms->functions.end()) {
        continue;
      }
      missing.erase(want.name);
      if (it->second.ifunc) {
        notes_.push_back(std::string(want.name) + " in " + path +
                         " is an IFUNC resolver: not probed");
        continue;
      }
      by_module[path].push_back(
          Found{want.name, want.kind, *bias + it->second.value, it->second.size});
    }
  }
  if (by_module.empty()) {
    return Error{"no allocator entry point (malloc, free, ...) found in pid " +
                 std::to_string(tp.pid())};
  }

  // Code areas next to each module that holds probed functions.
  for (auto& [path, funcs] : by_module) {
    auto range = module_range(maps_, path);
    if (!range) {
      return Error{"module " + path + " is not mapped"};
    }
    const size_t size = code_area_size(funcs.size());
    auto where = find_code_area(maps_, range->first, range->second, size);
    if (!where) {
      return Error{"no free address range within reach of " + path};
    }
    auto addr = checked(w.syscall(SYS_mmap, {*where, size, PROT_READ | PROT_WRITE,
                                             MAP_PRIVATE | MAP_ANONYMOUS | kMapFixedNoReplace,
                                             static_cast<uint64_t>(-1), 0}),
                        "mmap of the probe code area");
    if (!addr) {
      return addr.error();
    }
    code_areas_.push_back({*addr, size});
    if (*addr != *where) {
      return Error{"the kernel placed the probe code area away from " + path};
    }
  }

  // The shared area: a memfd the target creates, sized and mapped by profctl through
  // /proc/PID/fd, mapped into the target, and its fd closed there again.
  const char kName[] = "profctl-probe";
  if (auto r = w.write(code_areas_.front().address, std::as_bytes(std::span(kName, sizeof kName)));
      !r) {
    return r.error();
  }
  auto tfd = checked(w.syscall(SYS_memfd_create, {code_areas_.front().address, MFD_CLOEXEC}),
                     "memfd_create");
  if (!tfd) {
    return tfd.error();
  }
  auto close_tfd = [&] { (void)w.syscall(SYS_close, {*tfd}); };
  auto fd = Fd::open("/proc/" + std::to_string(w.pid()) + "/fd/" + std::to_string(*tfd), O_RDWR);
  if (!fd) {
    close_tfd();
    return fd.error();
  }
  auto area = SharedArea::create(options_, std::move(*fd));
  if (!area) {
    close_tfd();
    return area.error();
  }
  area_ = std::move(*area);
  // MAP_POPULATE: the target's first record must not fault in ring pages.
  auto shared = checked(w.syscall(SYS_mmap, {0, area_.size(), PROT_READ | PROT_WRITE,
                                             MAP_SHARED | MAP_POPULATE, *tfd, 0}),
                        "mmap of the probe shared area");
  close_tfd();
  if (!shared) {
    return shared.error();
  }
  shared_ = {*shared, area_.size()};

  // Every thread's stack, so records copy stacks with memcpy inside known bounds.
  for (pid_t tid : w.stopped()) {
    if (auto regs = w.regs(tid)) {
      register_thread(tid, *regs);
    }
  }

  // Images and patches.
  std::vector<std::pair<pid_t, uint64_t>> pcs;
  for (pid_t tid : w.stopped()) {
    if (auto regs = w.regs(tid)) {
      pcs.emplace_back(tid, regs->rip);
    }
  }
  size_t area_index = 0;
  for (auto& [path, funcs] : by_module) {
    const Area& code = code_areas_[area_index++];
    std::vector<std::vector<uint8_t>> bytes(funcs.size());
    std::vector<ProbeSite> sites;
    for (size_t i = 0; i < funcs.size(); ++i) {
      const size_t want =
          funcs[i].size > 0 ? std::min<uint64_t>(funcs[i].size, 1 << 16) : kUnknownSizeScanWindow;
      bytes[i].resize(want);
      auto n = w.read(funcs[i].address, std::as_writable_bytes(std::span(bytes[i])));
      if (!n) {
        return n.error();
      }
      bytes[i].resize(*n);
      ProbeSite site;
      site.name = funcs[i].name;
      site.kind = funcs[i].kind;
      site.code = FunctionCode{funcs[i].address, bytes[i], funcs[i].size};
      sites.push_back(site);
    }
    auto image = build_probe_image(code.address, code.size, shared_.address, sites);
    if (!image) {
      return image.error();
    }
    if (auto r = w.write(code.address, std::as_bytes(std::span(image->code))); !r) {
      return r.error();
    }
    auto prot = checked(w.syscall(SYS_mprotect, {code.address, image->process_token - code.address,
                                                 PROT_READ | PROT_EXEC}),
                        "mprotect of the probe code area");
    if (!prot) {
      return prot.error();
    }
    // The process token: the owner's pid, wiped to 0 in a forked child (so the record path
    // needs no getpid). Only if the kernel can wipe it.
    if (auto wipe = w.syscall(SYS_madvise, {image->process_token, kPage, kMadvWipeOnFork});
        wipe && *wipe == 0) {
      const uint64_t owner = static_cast<uint64_t>(pid_);
      (void)w.write(image->process_token, std::as_bytes(std::span(&owner, 1)));
    }
    for (size_t i = 0; i < image->sites.size(); ++i) {
      const SitePatch& sp = image->sites[i];
      const std::string what = funcs[i].name + " (" + path + ")";
      if (sp.method == PatchMethod::Refused) {
        notes_.push_back(what + " not probed: " + sp.reason);
        continue;
      }
      if (sp.method == PatchMethod::Alias) {
        ++probed_;
        continue;
      }
      // No thread may be stopped inside the bytes being replaced.
      const uint64_t lo = sp.patch_address;
      const uint64_t hi = lo + sp.new_bytes.size();
      bool inside = false;
      for (auto& [tid, pc] : pcs) {
        inside = inside || (pc > lo && pc < hi);
      }
      if (inside) {
        notes_.push_back(what + " not probed: a thread was stopped inside its first bytes");
        continue;
      }
      std::vector<uint8_t> now(sp.original_bytes.size());
      auto n = w.read(lo, std::as_writable_bytes(std::span(now)));
      if (!n || *n != now.size() || now != sp.original_bytes) {
        notes_.push_back(what + " not probed: its bytes changed while installing");
        continue;
      }
      Patch p;
      p.address = lo;
      p.original = sp.original_bytes;
      p.patched = sp.new_bytes;
      p.method = sp.method;
      p.trampoline = sp.trampoline_entry;
      patches_.push_back(p);
      ++probed_;
      if (sp.method == PatchMethod::Int3) {
        notes_.push_back(what + " probed with a breakpoint (each call traps): " + sp.reason);
      }
      log->debug("probe {} at {}: {} (site {}, stub {}, original path {}, code {})", what, hex(lo),
                 patch_method_name(sp.method), sp.site_index, hex(sp.trampoline_entry),
                 hex(sp.original_path), hex(code.address));
    }
  }
  if (patches_.empty()) {
    return Error{"none of the allocator's entry points could be probed"};
  }
  // Enabled before the first jump lands, so no call goes unrecorded once patched.
  area_.set_enabled(true);
  for (const Patch& p : patches_) {
    if (auto r = w.write(p.address, std::as_bytes(std::span(p.patched))); !r) {
      return r.error();
    }
  }
  return {};
}

void HeapProbes::register_thread(pid_t tid, const user_regs_struct& regs) {
  if (regs.fs_base == 0) {
    return;
  }
  const MapEntry* m = find_mapping(maps_, regs.rsp);
  if (m == nullptr) {
    if (auto text = read_maps_text(pid_)) {
      maps_ = parse_maps(*text);
      m = find_mapping(maps_, regs.rsp);
    }
  }
  if (m == nullptr) {
    return;
  }
  if (area_.register_thread(regs.fs_base, m->start, m->end, tid)) {
    thread_pointers_[tid] = regs.fs_base;
  }
}

bool HeapProbes::on_trap(pid_t tid) {
  user_regs_struct regs{};
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) {
    return false;
  }
  for (const Patch& p : patches_) {
    if (p.method == PatchMethod::Int3 && !restored_ && regs.rip == p.address + 1) {
      // The stack is as at the function's entry: continue in its trampoline.
      regs.rip = p.trampoline;
      return ptrace(PTRACE_SETREGS, tid, nullptr, &regs) == 0;
    }
  }
  return false;
}

void HeapProbes::clean_child(StoppedWorld& child) {
  if (restored_ || exec_.load()) {
    return;
  }
  for (const Patch& p : patches_) {
    (void)child.write(p.address, std::as_bytes(std::span(p.original)));
  }
  unmap_all(child);
}

void HeapProbes::unmap_all(StoppedWorld& world) {
  for (const Area& a : code_areas_) {
    (void)world.syscall(SYS_munmap, {a.address, a.size});
  }
  if (shared_.address != 0) {
    (void)world.syscall(SYS_munmap, {shared_.address, shared_.size});
  }
}

bool HeapProbes::remove(StoppedWorld& w) {
  if (removed_) {
    return true;
  }
  if (exec_.load()) {
    removed_ = true;  // gone with the old image; nothing of ours is mapped any more
    return true;
  }
  if (area_.data() != nullptr) {
    area_.set_enabled(false);
  }
  if (!restored_) {
    for (const Patch& p : patches_) {
      if (auto r = w.write(p.address, std::as_bytes(std::span(p.original))); !r) {
        logger("probe")->warn("restoring {} bytes at {}: {}", p.original.size(), hex(p.address),
                              r.error().message());
      }
    }
    restored_ = true;
  }
  // The areas go only when no thread is in a trampoline or a call-through.
  bool busy = area_.data() != nullptr && area_.counters().inflight > 0;
  for (pid_t tid : w.stopped()) {
    auto regs = w.regs(tid);
    if (!regs) {
      continue;
    }
    for (const Area& a : code_areas_) {
      busy = busy || (regs->rip >= a.address && regs->rip < a.address + a.size);
    }
  }
  if (busy && ++remove_attempts_ < 200) {
    return false;  // let it run a little and look again
  }
  if (busy) {
    notes_.push_back(
        "a thread stayed inside a probed call: the probe areas were left mapped "
        "(the jumps are gone; nothing enters them again)");
  } else {
    unmap_all(w);
  }
  removed_ = true;
  return true;
}

HeapProbes::~HeapProbes() = default;

}  // namespace profctl::probe
