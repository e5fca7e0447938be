// SPDX-License-Identifier: MIT
#include "probe/probes.h"

#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>

#include "attach/proc.h"
#include "attach/seccomp_check.h"
#include "attach/stopped_world.h"
#include "attach/trace_observer.h"
#include "base/log.h"
#include "base/text_fields.h"
#include "probe/abi/probe_abi.h"
#include "probe/alloc_nesting.h"
#include "probe/code_area.h"
#include "probe/elf_symbols.h"
#include "probe/leftovers.h"
#include "probe/link_map.h"
#include "probe/wait_sites.h"

namespace profctl::probe {
namespace {

struct Want {
  const char* name;
  uint32_t kind;
};
// The C allocation functions first: an address that carries several of these names (an
// allocator's aliases: tcmalloc's malloc is tc_malloc) keeps the first name.
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
    // The allocators' own entry points that programs call directly, each mapped onto the
    // kind whose arguments it shares (the size in the same register). Left out: C++'s
    // throwing operator new (and tc_new, mi_new...): an exception must never pass through a
    // call-through frame (no CFI); the delete operators with them; functions that resize
    // in place (xallocx, mi_expand), free on failure (mi_reallocf) or take a pointer to the
    // pointer (mi_reallocarr); mi_heap_* and mi_strdup & co.
    // jemalloc (non-standard API): mallocx(size, flags), rallocx(p, size, flags),
    // dallocx(p, flags), sdallocx(p, size, flags).
    {"mallocx", PROBE_KIND_MALLOC},
    {"rallocx", PROBE_KIND_REALLOC},
    {"dallocx", PROBE_KIND_FREE},
    {"sdallocx", PROBE_KIND_FREE},
    // gperftools' tcmalloc.
    {"tc_malloc", PROBE_KIND_MALLOC},
    {"tc_malloc_skip_new_handler", PROBE_KIND_MALLOC},
    {"tc_calloc", PROBE_KIND_CALLOC},
    {"tc_realloc", PROBE_KIND_REALLOC},
    {"tc_free", PROBE_KIND_FREE},
    {"tc_free_sized", PROBE_KIND_FREE},
    {"tc_cfree", PROBE_KIND_FREE},
    {"tc_memalign", PROBE_KIND_MEMALIGN},
    {"tc_posix_memalign", PROBE_KIND_POSIX_MEMALIGN},
    {"tc_valloc", PROBE_KIND_VALLOC},
    {"tc_pvalloc", PROBE_KIND_PVALLOC},
    {"tc_new_nothrow", PROBE_KIND_MALLOC},
    {"tc_newarray_nothrow", PROBE_KIND_MALLOC},
    // mimalloc: the *_aligned variants take the size first too (the *_aligned_at ones are
    // left out: a code area has room for 32 sites).
    {"mi_malloc", PROBE_KIND_MALLOC},
    {"mi_zalloc", PROBE_KIND_MALLOC},
    {"mi_malloc_small", PROBE_KIND_MALLOC},
    {"mi_zalloc_small", PROBE_KIND_MALLOC},
    {"mi_malloc_aligned", PROBE_KIND_MALLOC},
    {"mi_zalloc_aligned", PROBE_KIND_MALLOC},
    {"mi_new_nothrow", PROBE_KIND_MALLOC},
    {"mi_new_aligned_nothrow", PROBE_KIND_MALLOC},
    {"mi_calloc", PROBE_KIND_CALLOC},
    {"mi_mallocn", PROBE_KIND_CALLOC},
    {"mi_calloc_aligned", PROBE_KIND_CALLOC},
    {"mi_realloc", PROBE_KIND_REALLOC},
    {"mi_rezalloc", PROBE_KIND_REALLOC},
    {"mi_realloc_aligned", PROBE_KIND_REALLOC},
    {"mi_rezalloc_aligned", PROBE_KIND_REALLOC},
    {"mi_reallocn", PROBE_KIND_REALLOCARRAY},
    {"mi_reallocarray", PROBE_KIND_REALLOCARRAY},
    {"mi_recalloc", PROBE_KIND_REALLOCARRAY},
    {"mi_free", PROBE_KIND_FREE},
    {"mi_free_size", PROBE_KIND_FREE},
    {"mi_free_aligned", PROBE_KIND_FREE},
    {"mi_free_size_aligned", PROBE_KIND_FREE},
};

// The probes make syscalls of their own in any thread (getpid, gettid, and
// process_vm_readv/writev for a stack without registered bounds): a failure is handled,
// but a filter that kills or traps for one would let a probe kill the target.
Result<void> check_seccomp(const StoppedWorld& w) {
  for (pid_t tid : w.stopped()) {
    for (long nr : {long{SYS_getpid}, long{SYS_gettid}, long{SYS_process_vm_readv},
                    long{SYS_process_vm_writev}, long{SYS_nanosleep}}) {
      const auto self = static_cast<uint64_t>(w.pid());
      if (auto ok = seccomp_allows(tid, {nr, {self, 0, 1, 0, 1, 0}, 0}, SeccompNeed::kSurvive);
          !ok) {
        return Error{ok.error().message() + " (a call the probes make when they record)"};
      }
    }
  }
  return {};
}

bool is_heap_kind(uint32_t kind) { return kind >= PROBE_KIND_MALLOC && kind <= PROBE_KIND_FREE; }

// A module that holds allocation functions, as read for finding them.
struct HeapModule {
  ElfModuleSymbols syms;
  uint64_t bias = 0;
};

// The allocator's entry points: each name from the first module (in the dynamic linker's
// search order) that defines it, as ld.so binds it for every caller. An IFUNC is noted, not
// probed.
SitesByModule find_heap_functions(const std::vector<std::string>& modules, const std::string& root,
                                  const std::vector<MapEntry>& maps,
                                  std::map<std::string, HeapModule>& read,
                                  std::vector<std::string>& notes) {
  SitesByModule by_module;
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
    auto bias = load_bias(*syms, maps, path);
    if (!bias) {
      continue;
    }
    for (const Want& want : kHeapFunctions) {
      auto it = syms->functions.find(want.name);
      if (!missing.count(want.name) || it == syms->functions.end()) {
        continue;
      }
      missing.erase(want.name);
      auto& sites = by_module[path];
      const uint64_t address = *bias + it->second.value;
      if (std::any_of(sites.begin(), sites.end(),
                      [&](const FoundSite& f) { return f.address == address; })) {
        continue;  // an alias of a function found before (tcmalloc's tc_malloc is malloc)
      }
      if (it->second.ifunc) {
        notes.push_back(std::string(want.name) + " in " + path +
                        " is an IFUNC resolver: not probed");
        continue;
      }
      sites.push_back(FoundSite{want.name, want.kind, address, it->second.size});
    }
    if (by_module[path].empty()) {
      by_module.erase(path);
    } else {
      read[path] = HeapModule{std::move(*syms), *bias};
    }
  }
  return by_module;
}

// PROBE_SITE_NESTS on every allocation site whose function enters another probed one
// (probe/alloc_nesting.h). realloc is left alone: enter_realloc already takes a frame for
// the calls that nest (old NULL, size 0, a sampled old block), and an unsampled realloc
// that frees an unsampled block through free is no second sample.
void mark_nesting(SitesByModule& by_module, const std::map<std::string, HeapModule>& read,
                  const std::vector<MapEntry>& maps, TargetMemory& target,
                  const std::string& root) {
  std::set<uint64_t> probed;
  std::set<std::string> names;
  for (const auto& [path, sites] : by_module) {
    for (const FoundSite& f : sites) {
      if (is_heap_kind(f.kind) && f.kind != PROBE_KIND_FREE) {
        probed.insert(f.address);
        names.insert(f.name);
      }
    }
  }
  ReadCode read_code = [&target](uint64_t address, size_t len) {
    std::vector<uint8_t> b(len);
    auto n = target.read(address, std::as_writable_bytes(std::span(b)));
    b.resize(n ? *n : 0);
    return b;
  };
  for (auto& [path, sites] : by_module) {
    auto m = read.find(path);
    if (m == read.end()) {
      continue;
    }
    const HeapModule& hm = m->second;
    NestingScan scan;
    scan.read = read_code;
    std::vector<uint64_t> starts = hm.syms.function_starts;
    for (uint64_t& st : starts) {
      st += hm.bias;
    }
    scan.length = lengths_from_starts(std::move(starts));
    scan.module_lo = UINT64_MAX;
    for (const MapEntry& e : maps) {
      if (e.path == path) {
        scan.module_lo = std::min(scan.module_lo, e.start);
        scan.module_hi = std::max(scan.module_hi, e.end);
      }
    }
    for (const auto& [slot, name] : hm.syms.plt_slots) {
      scan.plt_slots.emplace(hm.bias + slot, name);
    }
    // A slot names a function; the module's own definition is the one followed (an
    // intermediate like mimalloc's mi_valloc is defined next to its callee). Every slot's
    // name is looked up in one read of the file, on the first question.
    std::vector<std::string> slot_names;
    for (const auto& [slot, name] : hm.syms.plt_slots) {
      slot_names.push_back(name);
    }
    auto defined = std::make_shared<std::optional<std::map<std::string, uint64_t>>>();
    scan.defined = [file = root + path, bias = hm.bias, slot_names = std::move(slot_names),
                    defined](const std::string& name) -> std::optional<uint64_t> {
      if (!defined->has_value()) {
        defined->emplace();
        if (auto syms = read_elf_functions(file, slot_names)) {
          for (const auto& [n, f] : syms->functions) {
            if (!f.ifunc) {
              (**defined)[n] = bias + f.value;
            }
          }
        }
      }
      auto it = (*defined)->find(name);
      return it == (*defined)->end() ? std::nullopt : std::optional<uint64_t>(it->second);
    };
    scan.probed = probed;
    scan.probed_names = names;
    for (FoundSite& f : sites) {
      if (is_heap_kind(f.kind) && f.kind != PROBE_KIND_FREE && f.kind != PROBE_KIND_REALLOC &&
          f.kind != PROBE_KIND_REALLOCARRAY && enters_probed(scan, f.address, f.size)) {
        f.flags |= PROBE_SITE_NESTS;
        logger("probe")->debug("{} ({}) enters another probed allocation function", f.name, path);
      }
    }
  }
}

// glibc's libc as the wait-site lookups below see it: its symbols and load bias, the
// internal names from its debug file (when one is installed), and its code in the target.
struct Libc {
  const ElfModuleSymbols& syms;
  uint64_t bias = 0;
  std::map<std::string, ElfFunction, std::less<>> internal;
  ReadCode read;
  FunctionLength lengths;
  uint64_t private_wait = 0;  // __lll_lock_wait_private: never the callee looked for
  std::vector<FoundSite>& out;

  const ElfFunction* exported(std::string_view name) const {
    auto it = syms.functions.find(name);
    return it == syms.functions.end() ? nullptr : &it->second;
  }
  const ElfFunction* hidden(std::string_view name) const {
    auto it = internal.find(name);
    return it == internal.end() ? nullptr : &it->second;
  }
  void add(const std::string& name, uint32_t kind, const ElfFunction& f, uint32_t flags = 0) {
    if (!f.ifunc) {
      out.push_back(FoundSite{name, kind, bias + f.value, f.size, flags});
    }
  }
};

// __lll_lock_wait: by name, else the futex-wait callee of pthread_mutex_lock.
void find_lock_wait(Libc& c) {
  if (const ElfFunction* f = c.hidden("__lll_lock_wait")) {
    c.add("__lll_lock_wait", PROBE_KIND_MUTEX, *f);
    return;
  }
  const ElfFunction& lock = *c.exported("pthread_mutex_lock");
  if (auto t = futex_callee(c.bias + lock.value, lock.size ? lock.size : 1024, c.read,
                            {c.private_wait}, c.lengths)) {
    c.out.push_back(FoundSite{"__lll_lock_wait", PROBE_KIND_MUTEX, *t, 0});
  }
}

// The holder side: the release of a contended lock (__lll_lock_wake*).
void find_lock_wake(Libc& c) {
  const ElfFunction* private_wake = c.exported("__lll_lock_wake_private");
  if (private_wake != nullptr) {
    c.add("__lll_lock_wake_private", PROBE_KIND_MUTEX_WAKE, *private_wake);
  }
  if (const ElfFunction* f = c.hidden("__lll_lock_wake")) {
    c.add("__lll_lock_wake", PROBE_KIND_MUTEX_WAKE, *f);
  } else if (const ElfFunction* un = c.exported("pthread_mutex_unlock")) {
    std::set<uint64_t> not_it = {c.private_wait};
    if (private_wake != nullptr) {
      not_it.insert(c.bias + private_wake->value);
    }
    if (auto t =
            futex_callee(c.bias + un->value, un->size ? un->size : 64, c.read, not_it, c.lengths)) {
      c.out.push_back(FoundSite{"__lll_lock_wake", PROBE_KIND_MUTEX_WAKE, *t, 0});
    }
  }
}

// __futex_abstimed_wait_common: by name, else the futex-wait callee of a cancellable
// entry. Its sixth argument says whether the wait is a cancellation point: such a wait is
// only hijacked while the cancellation path is patched (blob.c, "unwinds").
void find_cancellable_wait(Libc& c) {
  if (const ElfFunction* f = c.hidden("__futex_abstimed_wait_common")) {
    c.add("__futex_abstimed_wait_common", PROBE_KIND_BLOCK, *f, PROBE_SITE_CANCELLABLE_ARG6);
    return;
  }
  for (const char* entry : {"pthread_clockjoin_np", "sem_clockwait"}) {
    const ElfFunction* e = c.exported(entry);
    if (e == nullptr) {
      continue;
    }
    if (auto t = futex_callee(c.bias + e->value, e->size ? e->size : 1024, c.read, {c.private_wait},
                              c.lengths)) {
      c.out.push_back(FoundSite{"__futex_abstimed_wait_common", PROBE_KIND_BLOCK, *t, 0,
                                PROBE_SITE_CANCELLABLE_ARG6});
      return;
    }
  }
}

// Every cancellation and pthread_exit unwinds through __pthread_unwind; the exported
// __pthread_unwind_next calls it.
void find_pthread_unwind(Libc& c) {
  if (const ElfFunction* f = c.hidden("__pthread_unwind")) {
    c.add("__pthread_unwind", PROBE_KIND_UNWIND, *f, PROBE_SITE_CANCEL_UNWIND);
  } else if (const ElfFunction* next = c.exported("__pthread_unwind_next")) {
    if (auto t = forwarded_callee(c.bias + next->value, next->size, c.read, c.lengths)) {
      c.out.push_back(FoundSite{"__pthread_unwind", PROBE_KIND_UNWIND, *t, c.lengths(*t),
                                PROBE_SITE_CANCEL_UNWIND});
    }
  }
}

// The futex-wait funnels of glibc (see probe/wait_sites.h): by name from the libc debug
// file when one is installed, else from the code of exported entry points. Returns the
// module (libc) and its sites.
Result<std::pair<std::string, std::vector<FoundSite>>> find_wait_functions(
    TargetMemory& target, const std::vector<std::string>& modules, const std::string& root,
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
    auto maps = read_maps_text(target.pid());
    if (!maps) {
      return maps.error();
    }
    auto bias = load_bias(*syms, parse_maps(*maps), path);
    if (!bias) {
      return bias.error();
    }
    for (const auto& [name, f] : syms->functions) {
      if (name.starts_with("pthread_rwlock_") && f.size > 0) {
        lock_ranges.emplace_back(*bias + f.value, *bias + f.value + f.size);
      }
    }
    std::vector<FoundSite> out;
    std::vector<uint64_t> starts = syms->function_starts;
    for (uint64_t& st : starts) {
      st += *bias;
    }
    Libc c{*syms, *bias, {}, {}, lengths_from_starts(std::move(starts)), 0, out};
    if (std::string dbg = debug_file_for_build_id(syms->build_id); !dbg.empty()) {
      if (auto d = read_debug_functions(dbg, kInternal, *syms)) {
        c.internal = d->functions;
      }
    }
    c.read = [&target](uint64_t address, size_t len) {
      std::vector<uint8_t> b(len);
      auto n = target.read(address, std::as_writable_bytes(std::span(b)));
      b.resize(n ? *n : 0);
      return b;
    };
    c.private_wait = *bias + c.exported("__lll_lock_wait_private")->value;
    c.add("__lll_lock_wait_private", PROBE_KIND_MUTEX, *c.exported("__lll_lock_wait_private"));
    if (const ElfFunction* f = c.exported("pthread_barrier_wait")) {
      c.add("pthread_barrier_wait", PROBE_KIND_BLOCK, *f);
    }
    find_lock_wait(c);
    find_lock_wake(c);
    find_cancellable_wait(c);
    find_pthread_unwind(c);
    return std::make_pair(path, out);
  }
  return Error{"no glibc libc.so.6 in the target (the waits are probed in glibc)"};
}

// The unwinders' entries a C++ throw or a forced unwind starts at (libgcc_s, or a copy
// linked into any module): a hijacked wait gets its return address back there (blob.c,
// "unwinds"). Every module that defines them, as each copy is called by its own callers.
std::vector<std::pair<std::string, FoundSite>> find_unwinder_entries(
    const std::vector<std::string>& modules, const std::string& root,
    const std::vector<MapEntry>& maps) {
  static const std::vector<std::string> kNames = {"_Unwind_RaiseException", "_Unwind_ForcedUnwind"};
  std::vector<std::pair<std::string, FoundSite>> out;
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
        out.emplace_back(path, FoundSite{name, PROBE_KIND_UNWIND, *bias + f.value, f.size});
      }
    }
  }
  return out;
}

SharedAreaOptions shared_area_options(const ProbeOptions& o, pid_t pid) {
  SharedAreaOptions so;
  so.mem_rate = o.mem_rate;
  so.stack_bytes = o.stack_bytes;
  so.ring_bytes = o.ring_bytes;
  so.pointer_capacity = o.pointer_capacity;
  so.owner_pid = pid;
  so.block_rate_ticks = o.block_rate_ticks;
  so.mutex_fraction = o.mutex_fraction;
  so.unwind_bytes = o.unwind_bytes;
  so.ring_wait = o.ring_wait;
  so.liveness_ticks = o.liveness_ticks;
  if (o.child) {
    so.ring_bytes = child_ring_bytes(so.ring_bytes);
    so.pointer_capacity = std::min(so.pointer_capacity, kChildPointerCapacity);
    so.thread_capacity = std::min(so.thread_capacity, kChildThreadCapacity);
    so.prefault = false;
  }
  return so;
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
      p_->inst_.area.forget_thread(it->second, tid);
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
    if (child.shares_vm) {
      return;
    }
    if (child.followed && p_->on_adopted_ && (!p_->may_adopt_ || p_->may_adopt_())) {
      if (auto c = p_->adopt(cw)) {
        p_->on_adopted_(std::move(c));
        return;
      }
    }
    p_->clean_child(cw);
  }
  bool needs_detach_stop() const override { return true; }
  bool before_detach(StoppedWorld& world) override { return p_->remove(world); }

 private:
  std::shared_ptr<Probes> p_;
  bool unhijack_;  // timed waits are hijacked: stack copies need their return address back
};

namespace {

// Stops the world with nothing of a killed earlier session left in it: its probes go first
// (probes on probes would relocate another session's jumps), and `notes` says what was
// found. An area a thread is still inside (a call through it had not returned when the
// world stopped) is disabled and its entry points restored by the first pass, so the target
// runs a moment and a later pass removes it; one still in use after kLeftoverPatience (a
// long wait) stays mapped and disabled, as the notes say.
Result<std::unique_ptr<StoppedWorld>> stop_without_leftovers(TracedProcess& tp,
                                                             std::vector<std::string>& notes) {
  constexpr auto kLeftoverPatience = std::chrono::seconds(2);
  const std::string root = "/proc/" + std::to_string(tp.pid()) + "/root";
  const auto give_up = std::chrono::steady_clock::now() + kLeftoverPatience;
  for (bool told = false;; told = true) {
    {
      auto world = tp.stop_world();
      if (!world) {
        return world.error();
      }
      if ((*world)->stopped().empty()) {
        return Error{"no thread of pid " + std::to_string(tp.pid()) + " could be stopped"};
      }
      LeftoverReport pass = remove_leftovers(**world, root);
      notes.insert(notes.end(), pass.notes.begin(), pass.notes.end());
      if (pass.in_use.empty() || std::chrono::steady_clock::now() >= give_up) {
        notes.insert(notes.end(), pass.in_use.begin(), pass.in_use.end());
        return world;
      }
      if (!told) {
        logger("probe")->debug(
            "a thread is inside an earlier session's probe area: the target runs until it is out");
      }
    }  // the world resumes here
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

}  // namespace

Result<std::shared_ptr<Probes>> Probes::install(TracedProcess& tp, const ProbeOptions& o) {
  std::vector<std::string> leftovers;
  auto world = stop_without_leftovers(tp, leftovers);
  if (!world) {
    return world.error();
  }
  StoppedWorld& w = **world;
  // The SharedArea is created inside install_in (from the target's memfd); start empty.
  std::shared_ptr<Probes> self(new Probes());
  self->pid_ = tp.pid();
  self->options_ = shared_area_options(o, tp.pid());
  self->options_heap_ = o.heap;
  self->options_waits_ = o.waits;
  self->allow_breakpoints_ = o.allow_breakpoints;
  if (auto r = self->install_in(w, tp, leftovers); !r) {
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
  self->unhijack_ = !self->inst_.wait_returns.empty() && o.waits;
  tp.add_observer(observer_for(self));
  return self;
}

std::shared_ptr<TraceObserver> Probes::observer_for(std::shared_ptr<Probes> probes) {
  const bool unhijack = probes->unhijack_;
  return std::make_shared<Observer>(std::move(probes), unhijack);
}

std::shared_ptr<Probes> Probes::adopt(StoppedWorld& child) {
  if (restored_ || exec_.load() || inst_.shared.address == 0) {
    return nullptr;
  }
  std::shared_ptr<Probes> c(new Probes());
  c->pid_ = child.pid();
  c->options_ = options_;
  c->options_.owner_pid = child.pid();
  c->options_.ring_bytes = child_ring_bytes(options_.ring_bytes);
  c->options_.pointer_capacity = std::min(options_.pointer_capacity, kChildPointerCapacity);
  c->options_.thread_capacity = std::min(options_.thread_capacity, kChildThreadCapacity);
  c->options_.prefault = false;
  c->options_heap_ = options_heap_;
  c->options_waits_ = options_waits_;
  c->allow_breakpoints_ = allow_breakpoints_;
  c->unhijack_ = unhijack_;
  c->on_adopted_ = on_adopted_;
  c->may_adopt_ = may_adopt_;
  c->function_names_ = function_names_;
  c->wait_sites_ = wait_sites_;
  c->lock_ranges_ = lock_ranges_;
  // What the child inherited: the same patches at the same addresses (those not restored
  // yet), the same code areas.
  c->inst_.code_areas = inst_.code_areas;
  c->inst_.wait_returns = inst_.wait_returns;
  c->inst_.probed = inst_.probed;
  for (const Patch& p : inst_.patches) {
    if (!p.restored) {
      c->inst_.patches.push_back(p);
    }
  }
  auto fail = [&](const std::string& why) -> std::shared_ptr<Probes> {
    std::lock_guard lock(notes_mu_);
    inst_.notes.push_back("child process " + std::to_string(child.pid()) +
                          " is not probed: " + why);
    return nullptr;
  };
  auto regs = child.regs(child.pid());
  if (!regs) {
    return fail("its registers are not readable");
  }
  // The parent may have added a seccomp filter since the install: the child's remote
  // syscalls must not be the ones it kills for.
  if (auto r = check_seccomp(child); !r) {
    return fail(r.error().message());
  }
  Installer installer(child, c->inst_);
  // The memfd's name goes below the child's stack pointer (past the red zone): the thread
  // is held, and nothing of the child reads that memory before it runs on.
  const uint64_t name_at = (regs->rsp - 4096) & ~uint64_t{15};
  if (auto r = installer.map_shared_area_at(c->options_, name_at, inst_.shared.address); !r) {
    return fail(r.error().message());
  }
  if (c->inst_.shared.size < inst_.shared.size) {
    // The rest of the parent's (larger) area is the parent's memfd still: not the child's.
    const uint64_t tail = inst_.shared.address + c->inst_.shared.size;
    auto r = child.syscall(SYS_munmap, {tail, inst_.shared.size - c->inst_.shared.size});
    if (!r || *r != 0) {
      return fail("the inherited shared area could not be unmapped");
    }
  }
  installer.write_tokens(inst_.tokens);
  if (auto text = read_maps_text(child.pid())) {
    c->maps_ = parse_maps(*text);
  }
  c->register_thread(child.pid(), *regs, true);
  c->inst_.area.set_enabled(true);
  return c;
}

Result<SitesByModule> Probes::find_sites(StoppedWorld& w, const std::vector<std::string>& modules,
                                         const std::string& root) {
  SitesByModule by_module;
  if (options_heap_) {
    std::map<std::string, HeapModule> read;
    by_module = find_heap_functions(modules, root, maps_, read, inst_.notes);
    if (by_module.empty()) {
      return Error{"no allocator entry point (malloc, free, ...) found in pid " +
                   std::to_string(w.pid())};
    }
    mark_nesting(by_module, read, maps_, w, root);
  }
  if (options_waits_) {
    auto waits = find_wait_functions(w, modules, root, lock_ranges_);
    if (!waits) {
      if (!options_heap_) {
        return waits.error();
      }
      inst_.notes.push_back("futex waits not probed: " + waits.error().message());
    } else {
      auto& into = by_module[waits->first];
      into.insert(into.end(), waits->second.begin(), waits->second.end());
      for (auto& [path, f] : find_unwinder_entries(modules, root, maps_)) {
        by_module[path].push_back(f);
      }
    }
  }
  for (auto& [path, funcs] : by_module) {
    for (const FoundSite& f : funcs) {
      function_names_.try_emplace(f.address, f.name);  // an alias keeps the first name
    }
  }
  return by_module;
}

void Probes::note_wait_sites(const std::vector<FoundSite>& funcs, const ProbeImage& image) {
  for (size_t i = 0; i < image.sites.size(); ++i) {
    if (funcs[i].kind == PROBE_KIND_BLOCK || funcs[i].kind == PROBE_KIND_MUTEX ||
        funcs[i].kind == PROBE_KIND_MUTEX_WAKE) {
      wait_sites_[image.sites[i].site_index] = funcs[i].address;
    }
  }
}

std::optional<std::string> Probes::malloc_refusal(Installer& installer,
                                                  const SitesByModule& by_module,
                                                  const std::vector<ProbeImage>& images,
                                                  const std::vector<uint64_t>& pcs) {
  size_t m = 0;
  for (const auto& [path, funcs] : by_module) {
    for (size_t i = 0; i < funcs.size(); ++i) {
      if (funcs[i].kind == PROBE_KIND_MALLOC && funcs[i].name == "malloc") {
        if (auto why = installer.site_refusal(images[m].sites[i], pcs, allow_breakpoints_)) {
          return "malloc (" + path + ") cannot be probed: " + *why;
        }
        return std::nullopt;
      }
    }
    ++m;
  }
  // An IFUNC: its note becomes the one line.
  auto ifunc = std::find_if(inst_.notes.begin(), inst_.notes.end(),
                            [](const std::string& n) { return n.starts_with("malloc in "); });
  if (ifunc != inst_.notes.end()) {
    std::string why = *ifunc;
    inst_.notes.erase(ifunc);
    return why;
  }
  return "no module of the process defines malloc";
}

// The install recipe's phases in order (probe/README.md); installer.h has the ones that
// write into the target.
Result<void> Probes::install_in(StoppedWorld& w, TracedProcess& tp,
                                const std::vector<std::string>& leftovers) {
  const std::string root = "/proc/" + std::to_string(w.pid()) + "/root";
  for (const std::string& n : leftovers) {
    logger("probe")->debug("{}", n);
  }
  inst_.notes.insert(inst_.notes.end(), leftovers.begin(), leftovers.end());
  if (auto r = check_seccomp(w); !r) {
    return r.error();
  }
  auto maps_text = read_maps_text(w.pid());
  if (!maps_text) {
    return maps_text.error();
  }
  maps_ = parse_maps(*maps_text);
  auto link_map = link_map_modules(w, maps_);
  if (!link_map) {
    // A static executable has none: it holds its own allocator, first in the order below.
    logger("probe")->debug("no link map ({}): modules in address order, the executable first",
                           link_map.error().message());
  }
  const std::vector<std::string> chain = link_map ? *link_map : std::vector<std::string>{};
  auto by_module = find_sites(w, search_order(chain, maps_, read_exe(tp.pid())), root);
  if (!by_module) {
    return by_module.error();
  }

  Installer installer(w, inst_);
  // Code areas next to each module that holds probed functions, then the shared area.
  std::vector<MappedArea> code;
  for (auto& [path, funcs] : *by_module) {
    auto area = installer.map_code_area(path, maps_, code_area_size(funcs.size()));
    if (!area) {
      return area.error();
    }
    code.push_back(*area);
  }
  if (auto r = installer.map_shared_area(options_); !r) {
    return r.error();
  }
  // Every thread's stack, so records copy stacks with memcpy inside known bounds.
  std::vector<uint64_t> pcs;
  for (pid_t tid : w.stopped()) {
    if (auto regs = w.regs(tid)) {
      register_thread(tid, *regs, true);  // the world is stopped: maps_ is current
      pcs.push_back(regs->rip);
    }
  }
  // Images, then the journal: the heap sites only when malloc itself can be probed.
  std::vector<ProbeImage> images;
  for (auto& [path, funcs] : *by_module) {
    auto image = installer.write_code_area(code[images.size()], funcs);
    if (!image) {
      return image.error();
    }
    note_wait_sites(funcs, *image);
    images.push_back(std::move(*image));
  }
  std::optional<std::string> heap_refused;
  if (options_heap_) {
    heap_refused = malloc_refusal(installer, *by_module, images, pcs);
  }
  size_t image_index = 0;
  for (auto& [path, funcs] : *by_module) {
    installer.journal_patches(
        path, funcs, images[image_index++], pcs, allow_breakpoints_,
        [&](const FoundSite& f) { return heap_refused && is_heap_kind(f.kind); });
  }
  if (heap_refused) {
    // One line, and an empty heap profile rather than one that misses most allocations.
    inst_.notes.push_back("the profile is empty: " + *heap_refused);
  }
  if (inst_.patches.empty() && !heap_refused) {
    return Error{options_heap_ ? "none of the allocator's entry points could be probed"
                               : "none of the futex waits could be probed"};
  }
  // Enabled before the first jump lands, so no call goes unrecorded once patched.
  inst_.area.set_enabled(true);
  return installer.write_patches();
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
  if (inst_.area.register_thread(regs.fs_base, m->start, m->end, tid)) {
    thread_pointers_[tid] = regs.fs_base;
  }
}

bool Probes::on_trap(pid_t tid) {
  user_regs_struct regs{};
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &regs) != 0) {
    return false;
  }
  for (const Patch& p : inst_.patches) {
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
  for (const Patch& p : inst_.patches) {
    if (!child.write(p.address, std::as_bytes(std::span(p.original)))) {
      left.push_back("patch at " + hex(p.address));
    }
  }
  std::vector<MappedArea> areas = inst_.code_areas;
  if (inst_.shared.address != 0) {
    areas.push_back(inst_.shared);
  }
  for (const MappedArea& a : areas) {
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
    inst_.notes.push_back(line);
  }
}

std::vector<std::string> Probes::what_is_left(StoppedWorld& w) const {
  std::vector<std::string> left;
  for (const Patch& p : inst_.patches) {
    if (!p.restored) {
      left.push_back(std::to_string(p.original.size()) + " patched bytes at " + hex(p.address));
    }
  }
  // The maps, not our bookkeeping, say whether an area is gone.
  auto text = read_maps_text(w.pid());
  const std::vector<MapEntry> maps = text ? parse_maps(*text) : std::vector<MapEntry>{};
  std::vector<MappedArea> areas = inst_.code_areas;
  if (inst_.shared.address != 0) {
    areas.push_back(inst_.shared);
  }
  for (const MappedArea& a : areas) {
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
  removing_.store(true, std::memory_order_release);
  if (inst_.area.data() != nullptr) {
    inst_.area.set_enabled(false);
  }
  // Each round (the detach loop runs the target briefly between them, bounded at about a
  // second) retries what failed before.
  constexpr int kRounds = 200;
  Installer installer(w, inst_);
  const bool patched_out = installer.restore_patches();
  restored_ = patched_out;
  if (patched_out) {
    // At once, not only once nothing is busy: with __pthread_unwind unpatched, a thread
    // cancelled in a hijacked wait meanwhile would unwind into our return stub. Only words
    // that still hold the stub's address are written, so a second pass later is harmless.
    restore_waits(w);
  }
  // The areas go only when no thread is in a trampoline or a call-through.
  bool busy = inst_.area.data() != nullptr && inst_.area.counters().inflight > 0;
  for (pid_t tid : w.stopped()) {
    auto regs = w.regs(tid);
    if (!regs) {
      continue;
    }
    for (const MappedArea& a : inst_.code_areas) {
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
    installer.unmap_areas();
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
    inst_.notes.push_back(line);
  }
  removed_ = true;
  return true;
}

bool Probes::is_wait_return(uint64_t word) const {
  return std::find(inst_.wait_returns.begin(), inst_.wait_returns.end(), word) !=
         inst_.wait_returns.end();
}

void Probes::restore_waits(StoppedWorld& w) {
  if (inst_.area.data() == nullptr || inst_.wait_returns.empty()) {
    return;
  }
  for (const ActiveWait& a : inst_.area.active_waits()) {
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
    inst_.area.clear_wait(a.key);
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

bool is_heap_allocation_name(std::string_view name) {
  return std::any_of(std::begin(kHeapFunctions), std::end(kHeapFunctions),
                     [&](const Want& w) { return w.kind != PROBE_KIND_FREE && name == w.name; });
}

std::string Probes::function_name(uint64_t function) const {
  auto it = function_names_.find(function);
  return it == function_names_.end() ? std::string() : it->second;
}

void Probes::unhijack_copy(Snapshot& s) const {
  if (inst_.area.data() == nullptr || removed_ || inst_.wait_returns.empty() || s.stack_size < 8) {
    return;
  }
  auto a = inst_.area.wait_of(s.regs.fs_base);
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
