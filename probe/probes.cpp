// SPDX-License-Identifier: MIT
#include "probe/probes.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "attach/proc.h"
#include "attach/seccomp_check.h"
#include "attach/stopped_world.h"
#include "attach/trace_observer.h"
#include "base/log.h"
#include "base/text_fields.h"
#include "probe/abi/probe_abi.h"
#include "probe/blob_image.h"
#include "probe/code_area.h"
#include "probe/elf_symbols.h"
#include "probe/leftovers.h"
#include "probe/target_memfd.h"
#include "probe/wait_sites.h"

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
  uint32_t flags = 0;  // PROBE_SITE_*
};

// The futex-wait funnels of glibc (see probe/wait_sites.h): by name from the libc debug
// file when one is installed, else from the code of exported entry points. Returns the
// module (libc) and its sites.
Result<std::pair<std::string, std::vector<Found>>> find_wait_functions(
    StoppedWorld& w, const std::vector<std::string>& modules, const std::string& root,
    std::vector<std::pair<uint64_t, uint64_t>>& lock_ranges) {
  static const std::vector<std::string> kExported = {
      "__lll_lock_wait_private",    "pthread_mutex_lock",
      "pthread_clockjoin_np",       "sem_clockwait",
      "pthread_barrier_wait",       "pthread_rwlock_rdlock",
      "pthread_rwlock_wrlock",      "pthread_rwlock_timedrdlock",
      "pthread_rwlock_timedwrlock", "pthread_rwlock_clockrdlock",
      "pthread_rwlock_clockwrlock", "__lll_lock_wake_private",
      "pthread_mutex_unlock",       "__pthread_unwind_next"};
  static const std::vector<std::string> kInternal = {
      "__lll_lock_wait", "__futex_abstimed_wait_common", "__lll_lock_wake", "__pthread_unwind"};
  for (const std::string& path : modules) {
    auto syms = read_elf_functions(root + path, kExported);
    if (!syms || !syms->functions.contains("__lll_lock_wait_private") ||
        !syms->functions.contains("pthread_mutex_lock")) {
      continue;  // not glibc's libc
    }
    auto maps = read_maps_text(w.pid());
    if (!maps) {
      return maps.error();
    }
    auto bias = load_bias(*syms, parse_maps(*maps), path);
    if (!bias) {
      return bias.error();
    }
    std::vector<Found> out;
    for (const auto& [name, f] : syms->functions) {
      if (name.starts_with("pthread_rwlock_") && f.size > 0) {
        lock_ranges.emplace_back(*bias + f.value, *bias + f.value + f.size);
      }
    }
    auto add = [&](const std::string& name, uint32_t kind, const ElfFunction& f,
                   uint32_t flags = 0) {
      if (!f.ifunc) {
        out.push_back(Found{name, kind, *bias + f.value, f.size, flags});
      }
    };
    add("__lll_lock_wait_private", PROBE_KIND_MUTEX, syms->functions.at("__lll_lock_wait_private"));
    if (auto it = syms->functions.find("pthread_barrier_wait"); it != syms->functions.end()) {
      add("pthread_barrier_wait", PROBE_KIND_BLOCK, it->second);
    }
    std::map<std::string, ElfFunction, std::less<>> internal;
    if (std::string dbg = debug_file_for_build_id(syms->build_id); !dbg.empty()) {
      if (auto d = read_debug_functions(dbg, kInternal, *syms)) {
        internal = d->functions;
      }
    }
    auto read = [&w](uint64_t address, size_t len) {
      std::vector<uint8_t> b(len);
      auto n = w.read(address, std::as_writable_bytes(std::span(b)));
      b.resize(n ? *n : 0);
      return b;
    };
    const uint64_t private_wait = *bias + syms->functions.at("__lll_lock_wait_private").value;
    std::vector<uint64_t> starts = syms->function_starts;
    for (uint64_t& st : starts) {
      st += *bias;
    }
    const FunctionLength lengths = lengths_from_starts(std::move(starts));
    if (auto it = internal.find("__lll_lock_wait"); it != internal.end()) {
      add("__lll_lock_wait", PROBE_KIND_MUTEX, it->second);
    } else {
      const ElfFunction& lock = syms->functions.at("pthread_mutex_lock");
      if (auto t = futex_callee(*bias + lock.value, lock.size ? lock.size : 1024, read,
                                {private_wait}, lengths)) {
        out.push_back(Found{"__lll_lock_wait", PROBE_KIND_MUTEX, *t, 0});
      }
    }
    // The holder side: the release of a contended lock.
    if (auto it = syms->functions.find("__lll_lock_wake_private"); it != syms->functions.end()) {
      add("__lll_lock_wake_private", PROBE_KIND_MUTEX_WAKE, it->second);
    }
    if (auto it = internal.find("__lll_lock_wake"); it != internal.end()) {
      add("__lll_lock_wake", PROBE_KIND_MUTEX_WAKE, it->second);
    } else if (auto un = syms->functions.find("pthread_mutex_unlock");
               un != syms->functions.end()) {
      std::set<uint64_t> not_it = {private_wait};
      if (auto pw = syms->functions.find("__lll_lock_wake_private"); pw != syms->functions.end()) {
        not_it.insert(*bias + pw->second.value);
      }
      if (auto t = futex_callee(*bias + un->second.value, un->second.size ? un->second.size : 64,
                                read, not_it, lengths)) {
        out.push_back(Found{"__lll_lock_wake", PROBE_KIND_MUTEX_WAKE, *t, 0});
      }
    }
    // Its sixth argument says whether the wait is a cancellation point: such a wait is only
    // hijacked while the cancellation path below is patched (blob.c, "unwinds").
    if (auto it = internal.find("__futex_abstimed_wait_common"); it != internal.end()) {
      add("__futex_abstimed_wait_common", PROBE_KIND_BLOCK, it->second,
          PROBE_SITE_CANCELLABLE_ARG6);
    } else {
      for (const char* entry : {"pthread_clockjoin_np", "sem_clockwait"}) {
        auto e = syms->functions.find(entry);
        if (e == syms->functions.end()) {
          continue;
        }
        if (auto t = futex_callee(*bias + e->second.value, e->second.size ? e->second.size : 1024,
                                  read, {private_wait}, lengths)) {
          out.push_back(Found{"__futex_abstimed_wait_common", PROBE_KIND_BLOCK, *t, 0,
                              PROBE_SITE_CANCELLABLE_ARG6});
          break;
        }
      }
    }
    // Every cancellation and pthread_exit unwinds through __pthread_unwind; the exported
    // __pthread_unwind_next calls it.
    if (auto it = internal.find("__pthread_unwind"); it != internal.end()) {
      add("__pthread_unwind", PROBE_KIND_UNWIND, it->second, PROBE_SITE_CANCEL_UNWIND);
    } else if (auto next = syms->functions.find("__pthread_unwind_next");
               next != syms->functions.end()) {
      if (auto t = forwarded_callee(*bias + next->second.value, next->second.size, read, lengths)) {
        out.push_back(Found{"__pthread_unwind", PROBE_KIND_UNWIND, *t, lengths(*t),
                            PROBE_SITE_CANCEL_UNWIND});
      }
    }
    return std::make_pair(path, out);
  }
  return Error{"no glibc libc.so.6 in the target (the waits are probed in glibc)"};
}

// The unwinders' entries a C++ throw or a forced unwind starts at (libgcc_s, or a copy
// linked into any module): a hijacked wait gets its return address back there (blob.c,
// "unwinds"). Every module that defines them, as each copy is called by its own callers.
std::vector<std::pair<std::string, Found>> find_unwinder_entries(
    const std::vector<std::string>& modules, const std::string& root,
    const std::vector<MapEntry>& maps) {
  static const std::vector<std::string> kNames = {"_Unwind_RaiseException", "_Unwind_ForcedUnwind"};
  std::vector<std::pair<std::string, Found>> out;
  for (const std::string& path : modules) {
    auto syms = read_elf_functions(root + path, kNames);
    if (!syms || syms->functions.empty()) {
      continue;
    }
    auto bias = load_bias(*syms, maps, path);
    if (!bias) {
      continue;
    }
    for (const auto& [name, f] : syms->functions) {
      if (!f.ifunc && f.size > 0) {
        out.emplace_back(path, Found{name, PROBE_KIND_UNWIND, *bias + f.value, f.size});
      }
    }
  }
  return out;
}

// True when [address, address + size) in pid is a mapping of the file open at `fd`.
bool maps_our_memfd(pid_t pid, uint64_t address, uint64_t size, int fd) {
  struct stat ours {};
  struct stat theirs {};
  char path[96];
  std::snprintf(path, sizeof path, "/proc/%d/map_files/%llx-%llx", pid,
                static_cast<unsigned long long>(address),
                static_cast<unsigned long long>(address + size));
  return fstat(fd, &ours) == 0 && stat(path, &theirs) == 0 && ours.st_dev == theirs.st_dev &&
         ours.st_ino == theirs.st_ino;
}

}  // namespace

// What attach/ tells the probes of their process, from the install to the last detach,
// which removes them: the process keeps the probes alive until then.
class Probes::Observer final : public TraceObserver {
 public:
  Observer(std::shared_ptr<Probes> probes, bool unhijack)
      : p_(std::move(probes)), unhijack_(unhijack) {}
  void on_new_thread(pid_t tid, const user_regs_struct& regs) override {
    p_->register_thread(tid, regs);
  }
  void on_thread_exit(pid_t tid) override {
    auto it = p_->thread_pointers_.find(tid);
    if (it != p_->thread_pointers_.end()) {
      p_->area_.forget_thread(it->second, tid);
      p_->thread_pointers_.erase(it);
    }
  }
  bool on_trap(pid_t tid) override { return p_->on_trap(tid); }
  void on_exec() override { p_->exec_.store(true); }
  void filter_snapshot(Snapshot& snap) override {
    if (unhijack_) {
      p_->unhijack_copy(snap);
    }
  }
  void on_child_process(const ChildHookArgs& child, StoppedWorld& cw) override {
    if (!child.shares_vm) {
      p_->clean_child(cw);
    }
  }
  bool needs_detach_stop() const override { return true; }
  bool before_detach(StoppedWorld& world) override { return p_->remove(world); }

 private:
  std::shared_ptr<Probes> p_;
  bool unhijack_;  // timed waits are hijacked: stack copies need their return address back
};

Result<std::shared_ptr<Probes>> Probes::install(TracedProcess& tp, const ProbeOptions& o) {
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
  so.block_rate_ticks = o.block_rate_ticks;
  so.mutex_fraction = o.mutex_fraction;
  // The SharedArea is created inside install_in (from the target's memfd); start empty.
  std::shared_ptr<Probes> self(new Probes());
  self->pid_ = tp.pid();
  self->options_ = so;
  self->options_heap_ = o.heap;
  self->options_waits_ = o.waits;
  self->allow_breakpoints_ = o.allow_breakpoints;
  if (auto r = self->install_in(w, tp); !r) {
    // Nothing has run since the install began: no thread can be inside our code, so one
    // pass undoes everything that can be undone; what cannot is said.
    self->remove(w, /*last_chance=*/true);
    if (!self->left_.empty()) {
      std::string line = r.error().message() + "; and left in the target: ";
      for (size_t i = 0; i < self->left_.size(); ++i) {
        line += (i ? ", " : "") + self->left_[i];
      }
      return Error{line};
    }
    return r.error();
  }
  // From here on every exit path that detaches restores the target.
  tp.add_observer(std::make_shared<Observer>(self, !self->wait_returns_.empty() && o.waits));
  return self;
}

Result<void> Probes::install_in(StoppedWorld& w, TracedProcess& tp) {
  auto log = logger("probe");
  const std::string root = "/proc/" + std::to_string(w.pid()) + "/root";
  // A session killed earlier left its probes in: they go first (probes on probes would
  // relocate another session's jumps), and the capture says what was found.
  LeftoverReport left = remove_leftovers(w, root);
  notes_.insert(notes_.end(), left.notes.begin(), left.notes.end());
  // The probes make syscalls of their own in any thread (getpid, gettid, and
  // process_vm_readv/writev for a stack without registered bounds): a failure is handled,
  // but a filter that kills or traps for one would let a probe kill the target.
  for (pid_t tid : w.stopped()) {
    for (long nr : {long{SYS_getpid}, long{SYS_gettid}, long{SYS_process_vm_readv},
                    long{SYS_process_vm_writev}}) {
      const auto self = static_cast<uint64_t>(w.pid());
      if (auto ok = seccomp_allows(tid, {nr, {self, 0, 1, 0, 1, 0}, 0}, SeccompNeed::kSurvive);
          !ok) {
        return Error{ok.error().message() + " (a call the probes make when they record)"};
      }
    }
  }
  auto maps_text = read_maps_text(w.pid());
  if (!maps_text) {
    return maps_text.error();
  }
  maps_ = parse_maps(*maps_text);

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
  if (options_heap_) {
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
  }
  if (options_waits_) {
    auto waits = find_wait_functions(w, modules, root, lock_ranges_);
    if (!waits) {
      if (!options_heap_) {
        return waits.error();
      }
      notes_.push_back("futex waits not probed: " + waits.error().message());
    } else {
      auto& into = by_module[waits->first];
      into.insert(into.end(), waits->second.begin(), waits->second.end());
      for (auto& [path, f] : find_unwinder_entries(modules, root, maps_)) {
        by_module[path].push_back(f);
      }
    }
  }
  for (auto& [path, funcs] : by_module) {
    for (const Found& f : funcs) {
      function_names_[f.address] = f.name;
    }
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
    probe_blob_header header{};
    std::memcpy(&header, blob_image().data(), sizeof header);
    wait_returns_.push_back(*addr + header.wait_return_offset);
    if (*addr != *where) {
      return Error{"the kernel placed the probe code area away from " + path};
    }
  }

  // The shared area: a memfd the target creates under a random name, taken by profctl
  // without a path and proven to be that memfd before it is sized (probe/target_memfd.h),
  // mapped into the target, and its fd closed there again.
  const std::string name = random_memfd_name();
  if (auto r = w.write(code_areas_.front().address,
                       std::as_bytes(std::span(name.c_str(), name.size() + 1)));
      !r) {
    return r.error();
  }
  auto tfd = checked(
      w.syscall(SYS_memfd_create, {code_areas_.front().address, MFD_CLOEXEC | MFD_ALLOW_SEALING}),
      "memfd_create");
  if (!tfd) {
    return tfd.error();
  }
  auto close_tfd = [&] { (void)w.syscall(SYS_close, {*tfd}); };
  auto area = open_target_shared_area(w.pid(), static_cast<int>(*tfd), name, options_);
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
  // The descriptor the target mapped is a number in a table another process may share
  // (clone(CLONE_FILES)) and swap: the mapping must be our memfd, or the probes would
  // write into whatever the target chose (its own file: no harm to profctl, no records).
  if (!maps_our_memfd(w.pid(), shared_.address, shared_.size, area_.fd())) {
    return Error{"the target mapped another file than profctl's memfd: probes refused"};
  }

  // Every thread's stack, so records copy stacks with memcpy inside known bounds.
  for (pid_t tid : w.stopped()) {
    if (auto regs = w.regs(tid)) {
      register_thread(tid, *regs, true);  // the world is stopped: maps_ is current
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
      site.flags = funcs[i].flags;
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
      if (funcs[i].kind == PROBE_KIND_BLOCK || funcs[i].kind == PROBE_KIND_MUTEX ||
          funcs[i].kind == PROBE_KIND_MUTEX_WAKE) {
        wait_sites_[sp.site_index] = funcs[i].address;
      }
      if (sp.method == PatchMethod::Refused) {
        notes_.push_back(what + " not probed: " + sp.reason);
        continue;
      }
      if (sp.method == PatchMethod::Alias) {
        ++probed_;
        continue;
      }
      if (sp.method == PatchMethod::Int3 && !allow_breakpoints_) {
        notes_.push_back(what + " not probed: no jump fits (" + sp.reason +
                         ") and a breakpoint would kill the process if profctl died");
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
    return Error{options_heap_ ? "none of the allocator's entry points could be probed"
                               : "none of the futex waits could be probed"};
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

void Probes::register_thread(pid_t tid, const user_regs_struct& regs, bool maps_current) {
  if (regs.fs_base == 0) {
    return;
  }
  // The bounds must come from the maps as they are now: the blob copies stacks with plain
  // loads inside them. A cached copy can be a moment old, and the process keeps running
  // while a new thread's first stop is handled: glibc may have mapped the next thread's
  // stack PROT_NONE right below (merged there with this thread's guard page) before
  // making it read-write. Bounds taken from such a view ran one page past a stack's top,
  // and a record copying up to them faulted in the target.
  if (!maps_current) {
    if (auto text = read_maps_text(pid_)) {
      maps_ = parse_maps(*text);
    }
  }
  const MapEntry* m = find_mapping(maps_, regs.rsp);
  if (m == nullptr || !m->readable) {
    return;  // no bounds: the blob copies this thread's stack with process_vm_readv
  }
  logger("probe")->trace("thread {}: stack [{}, {}) rsp {} fs {}", tid, hex(m->start), hex(m->end),
                         hex(regs.rsp), hex(regs.fs_base));
  if (area_.register_thread(regs.fs_base, m->start, m->end, tid)) {
    thread_pointers_[tid] = regs.fs_base;
  }
}

bool Probes::on_trap(pid_t tid) {
  user_regs_struct regs{};
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) {
    return false;
  }
  for (const Patch& p : patches_) {
    if (p.method == PatchMethod::Int3 && !p.restored && regs.rip == p.address + 1) {
      // The stack is as at the function's entry: continue in its trampoline.
      regs.rip = p.trampoline;
      return ptrace(PTRACE_SETREGS, tid, nullptr, &regs) == 0;
    }
  }
  return false;
}

void Probes::clean_child(StoppedWorld& child) {
  if (restored_ || exec_.load()) {
    return;
  }
  std::vector<std::string> left;
  for (const Patch& p : patches_) {
    if (!child.write(p.address, std::as_bytes(std::span(p.original)))) {
      left.push_back("patch at " + hex(p.address));
    }
  }
  std::vector<Area> areas = code_areas_;
  if (shared_.address != 0) {
    areas.push_back(shared_);
  }
  for (const Area& a : areas) {
    auto r = child.syscall(SYS_munmap, {a.address, a.size});
    if (!r || *r != 0) {
      left.push_back("area at " + hex(a.address) + " (" + std::to_string(a.size) + " bytes)");
    }
  }
  if (!left.empty()) {
    // The child runs correctly with them (its records are foreign and never kept), but it
    // is not as it would be without profctl: say so.
    std::string line = "child process " + std::to_string(child.pid()) + " keeps profctl's ";
    for (size_t i = 0; i < left.size(); ++i) {
      line += (i ? ", " : "") + left[i];
    }
    std::lock_guard lock(notes_mu_);
    notes_.push_back(line);
  }
}

bool Probes::restore_patches(StoppedWorld& w) {
  bool all = true;
  for (Patch& p : patches_) {
    if (p.restored) {
      continue;
    }
    std::vector<uint8_t> now(p.original.size());
    if (auto r = w.write(p.address, std::as_bytes(std::span(p.original))); !r) {
      logger("probe")->warn("restoring {} bytes at {}: {}", p.original.size(), hex(p.address),
                            r.error().message());
    } else if (auto n = w.read(p.address, std::as_writable_bytes(std::span(now)));
               n && *n == now.size() && now == p.original) {
      p.restored = true;  // read back: the target's bytes are the file's again
    }
    all = all && p.restored;
  }
  return all;
}

void Probes::unmap_all(StoppedWorld& world) {
  std::vector<Area*> areas;
  for (Area& a : code_areas_) {
    areas.push_back(&a);
  }
  if (shared_.address != 0) {
    areas.push_back(&shared_);
  }
  for (Area* a : areas) {
    if (a->unmapped) {
      continue;
    }
    auto r = world.syscall(SYS_munmap, {a->address, a->size});
    if (r && *r == 0) {
      a->unmapped = true;
    } else {
      logger("probe")->warn("unmapping the probe area at {} ({} bytes): {}", hex(a->address),
                            a->size,
                            r ? std::strerror(static_cast<int>(-*r)) : r.error().message());
    }
  }
}

std::vector<std::string> Probes::what_is_left(StoppedWorld& w) const {
  std::vector<std::string> left;
  for (const Patch& p : patches_) {
    if (!p.restored) {
      left.push_back(std::to_string(p.original.size()) + " patched bytes at " + hex(p.address));
    }
  }
  // The maps, not our bookkeeping, say whether an area is gone.
  auto text = read_maps_text(w.pid());
  const std::vector<MapEntry> maps = text ? parse_maps(*text) : std::vector<MapEntry>{};
  std::vector<Area> areas = code_areas_;
  if (shared_.address != 0) {
    areas.push_back(shared_);
  }
  for (const Area& a : areas) {
    const bool mapped = !text || std::any_of(maps.begin(), maps.end(), [&](const MapEntry& m) {
      return m.start < a.address + a.size && a.address < m.end;
    });
    if (mapped) {
      left.push_back("a probe area at " + hex(a.address) + " (" + std::to_string(a.size) +
                     " bytes)");
    }
  }
  return left;
}

bool Probes::remove(StoppedWorld& w, bool last_chance) {
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
  // Each round (the detach loop runs the target briefly between them, bounded at about a
  // second) retries what failed before.
  constexpr int kRounds = 200;
  const bool patched_out = restore_patches(w);
  restored_ = patched_out;
  if (patched_out) {
    // At once, not only once nothing is busy: with __pthread_unwind unpatched, a thread
    // cancelled in a hijacked wait meanwhile would unwind into our return stub. Only words
    // that still hold the stub's address are written, so a second pass later is harmless.
    restore_waits(w);
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
  const bool last = ++remove_attempts_ >= kRounds || last_chance;
  if ((busy || !patched_out) && !last) {
    return false;  // let it run a little and look again
  }
  if (patched_out) {
    restore_waits(w);
  }
  if (!busy && patched_out) {
    unmap_all(w);
    if (!last && !what_is_left(w).empty()) {
      return false;  // an unmap failed: once more
    }
  }
  left_ = what_is_left(w);
  if (!left_.empty()) {
    std::string line = busy ? "a thread stayed inside a probed call: left in the target: "
                            : "could not be removed from the target: ";
    for (size_t i = 0; i < left_.size(); ++i) {
      line += (i ? ", " : "") + left_[i];
    }
    std::lock_guard lock(notes_mu_);
    notes_.push_back(line);
  }
  removed_ = true;
  return true;
}

bool Probes::is_wait_return(uint64_t word) const {
  return std::find(wait_returns_.begin(), wait_returns_.end(), word) != wait_returns_.end();
}

void Probes::restore_waits(StoppedWorld& w) {
  if (area_.data() == nullptr || wait_returns_.empty()) {
    return;
  }
  for (const ActiveWait& a : area_.active_waits()) {
    uint64_t word = 0;
    auto n = w.read(a.slot, std::as_writable_bytes(std::span(&word, 1)));
    // Only a word that still holds our address: a stale wait (its thread cancelled, its
    // stack reused) must not have the stack written.
    if (n && *n == sizeof word && is_wait_return(word)) {
      if (auto r = w.write(a.slot, std::as_bytes(std::span(&a.ret, 1))); !r) {
        logger("probe")->warn("restoring a waiting thread's return address at {}: {}", hex(a.slot),
                              r.error().message());
        continue;
      }
    }
    area_.clear_wait(a.key);
  }
}

bool Probes::in_lock_function(uint64_t pc) const {
  for (const auto& [lo, hi] : lock_ranges_) {
    if (pc >= lo && pc < hi) {
      return true;
    }
  }
  return false;
}

std::string Probes::function_name(uint64_t function) const {
  auto it = function_names_.find(function);
  return it == function_names_.end() ? std::string() : it->second;
}

void Probes::unhijack_copy(Snapshot& s) const {
  if (area_.data() == nullptr || removed_ || wait_returns_.empty() || s.stack_size < 8) {
    return;
  }
  auto a = area_.wait_of(s.regs.fs_base);
  if (!a) {
    return;
  }
  if (auto it = wait_sites_.find(a->site); it != wait_sites_.end()) {
    s.wait_function = function_name(it->second);
    s.wait_start_tsc = a->tsc0;
  }
  if (a->slot < s.stack_base || a->slot - s.stack_base > s.stack_size - 8) {
    return;
  }
  std::byte* at = s.stack_bytes.get() + (a->slot - s.stack_base);
  uint64_t word = 0;
  std::memcpy(&word, at, sizeof word);
  if (is_wait_return(word)) {
    std::memcpy(at, &a->ret, sizeof a->ret);
  }
}

Probes::~Probes() = default;

}  // namespace profctl::probe
