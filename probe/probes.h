// SPDX-License-Identifier: MIT
// Probes: the probe engine's install and removal for the heap profile, run inside
// attach/'s stopped world. It finds the allocator's entry points (the first module in
// link order that defines each: a statically linked allocator in the executable wins over
// libc), maps a code area next to each such module and one shared area (a memfd the target
// creates, so that it never needs access to profctl's files) into the target with remote
// syscalls, writes the trampolines, registers every thread's stack, and patches the entries.
//
// Everything it changes is journaled, and undone in the last stopped world of the capture
// (a TracedProcess detach hook, so every path that detaches restores): the enabled flag
// cleared, every patched byte rewritten with the file's, and both areas unmapped once no
// thread is inside a trampoline (a thread blocked in a call-through keeps them mapped, with
// the jumps gone: harmless). A child the target forks gets its bytes restored and the
// areas unmapped before it runs. After an exec the probes are gone with the old image.
#pragma once

#include <sys/types.h>

#include <algorithm>
#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "attach/snapshot.h"
#include "attach/traced_process.h"
#include "base/result.h"
#include "probe/installer.h"
#include "probe/probe_image.h"
#include "probe/shared_area.h"

namespace profctl::probe {

struct ProbeOptions {
  bool heap = true;               // malloc & co.
  bool waits = false;             // futex waits: the block and mutex profiles
  uint64_t block_rate_ticks = 0;  // Go's block profile rate, in TSC ticks; 0 = no block profile
  uint64_t mutex_fraction = 0;    // 1 in N lock waits; 0 = no mutex profile
  int64_t mem_rate = 512 * 1024;
  uint32_t stack_bytes = 16 * 1024;
  uint64_t ring_bytes = kDefaultRingBytes;
  uint64_t pointer_capacity = 1ULL << 22;
  bool allow_breakpoints = false;  // the int3 fallback (see ProbeCaptureOptions)
  bool child = false;  // a followed child's new image: a child's smaller, lazy area (kChild*)
  // The walk in the target (ABI v7): room for the modules' compiled unwind tables (0: every
  // record copies its stack). A full ring makes writers wait while profctl's heartbeat is
  // younger than liveness_ticks (ring_wait false, or 0 ticks: they drop, counted).
  uint64_t unwind_bytes = 16ULL << 20;
  bool ring_wait = true;
  uint64_t liveness_ticks = 0;
};

// True for the name of an allocation entry point the heap probes look for (malloc,
// mallocx, tc_malloc, mi_zalloc, ...; not the frees): a heap record's innermost frame.
bool is_heap_allocation_name(std::string_view name);

class Probes {
 public:
  // Installs the probes; the world is stopped for the duration. On failure nothing is left
  // in the target.
  static Result<std::shared_ptr<Probes>> install(TracedProcess& tp, const ProbeOptions& options);
  ~Probes();
  Probes(const Probes&) = delete;
  Probes& operator=(const Probes&) = delete;

  // A forked child the process tree follows (held at its first stop): its inherited
  // patches and code areas are kept, and its own shared area (smaller: child_ring_bytes)
  // replaces the parent's at the same address, so the inherited trampolines record into
  // it; its token and its thread are written. nullptr when that fails: the child is then
  // cleaned as an unfollowed one is, and the reason is noted.
  std::shared_ptr<Probes> adopt(StoppedWorld& child);
  // What attach/ must tell these probes (new threads, traps, exec, child processes, the
  // detach that removes them): register it on the process they are in.
  static std::shared_ptr<TraceObserver> observer_for(std::shared_ptr<Probes> probes);
  // Called with each child's probes made by adopt() (the child is still held): the
  // capture drains their ring. Inherited by the children's probes.
  // `may_adopt` is asked first: false cleans the child instead (the capture's bound).
  using Adopted = std::function<void(std::shared_ptr<Probes>)>;
  using MayAdopt = std::function<bool()>;
  void set_on_adopted(Adopted f, MayAdopt may_adopt) {
    on_adopted_ = std::move(f);
    may_adopt_ = std::move(may_adopt);
  }
  pid_t pid() const { return pid_; }

  SharedArea& area() { return inst_.area; }
  // The probed function at `function` (a record's rip): its name, "" when unknown.
  std::string function_name(uint64_t function) const;
  // Puts the real return address back where a stack copy shows a timed wait's hijacked
  // word (the copy must never show profctl's own patch). For attach/'s snapshot filter.
  void unhijack_copy(Snapshot& s) const;
  // True for a pc inside one of libc's rwlock operations (their futex waits are lock
  // contentions for the mutex profile).
  bool in_lock_function(uint64_t pc) const;
  // Lines for the report: which functions are probed and how, which could not be.
  const std::vector<std::string>& notes() const { return inst_.notes; }
  size_t probed() const { return inst_.probed; }
  // True once the target exec'd: the probes went with the old image.
  bool gone_by_exec() const { return exec_.load(); }
  // True once removed from the target (detach).
  bool removed() const { return removed_; }
  // True once the removal began (the probes were disabled for good): any thread.
  bool removing() const { return removing_.load(std::memory_order_acquire); }
  // After removal: what could not be taken out of the target (exact addresses and sizes);
  // empty when the target's code and maps are as they were before the install.
  const std::vector<std::string>& left() const { return left_; }

 private:
  class Observer;  // what attach/ tells the probes (probes.cpp)
  Probes() = default;
  // `leftovers`: what was found of killed sessions (stop_without_leftovers), for the notes.
  Result<void> install_in(StoppedWorld& world, TracedProcess& tp,
                          const std::vector<std::string>& leftovers);
  // The sites to probe, by module (the allocator's entry points and glibc's waits, as the
  // options ask), their names kept for function_name().
  Result<SitesByModule> find_sites(StoppedWorld& w, const std::vector<std::string>& modules,
                                   const std::string& root);
  // Why the heap sites are not patched at all: malloc (the name the dynamic linker binds)
  // cannot be probed, or is not found. nullopt when it can be.
  std::optional<std::string> malloc_refusal(Installer& installer, const SitesByModule& by_module,
                                            const std::vector<ProbeImage>& images,
                                            const std::vector<uint64_t>& pcs);
  // Which probed function each wait site of an image is (for the thread table).
  void note_wait_sites(const std::vector<FoundSite>& funcs, const ProbeImage& image);
  // maps_current: maps_ was read while every thread was stopped (install); otherwise the
  // maps are read again first.
  void register_thread(pid_t tid, const user_regs_struct& regs, bool maps_current = false);
  bool on_trap(pid_t tid);
  // The detach hook: true when done (clean, or as clean as it will get: see left()); false
  // asks for the target to run briefly and the world to be stopped again.
  // `last_chance`: no further round will come.
  bool remove(StoppedWorld& world, bool last_chance = false);
  void clean_child(StoppedWorld& child);
  // What of ours is still in the target: unrestored patches, areas still in its maps.
  std::vector<std::string> what_is_left(StoppedWorld& world) const;
  // Writes every waiting thread's real return address back into its stack.
  void restore_waits(StoppedWorld& world);
  bool is_wait_return(uint64_t word) const;

  Installation inst_;  // what the install put into the target (the journal among it)
  pid_t pid_ = 0;
  std::map<uint64_t, std::string> function_names_;          // probed function address -> name
  std::map<uint32_t, uint64_t> wait_sites_;                 // wait site index -> function address
  std::vector<std::pair<uint64_t, uint64_t>> lock_ranges_;  // [lo, hi) of rwlock functions
  std::map<pid_t, uint64_t> thread_pointers_;               // tid -> fs_base, to forget at exit
  std::vector<MapEntry> maps_;                              // for new threads' stacks
  std::vector<std::string> left_;
  std::mutex notes_mu_;  // a child is cleaned on the ptrace thread while notes may be read
  std::atomic<bool> exec_{false};
  bool removed_ = false;
  std::atomic<bool> removing_{false};
  bool restored_ = false;
  int remove_attempts_ = 0;
  SharedAreaOptions options_;
  bool options_heap_ = true;
  bool options_waits_ = false;
  bool allow_breakpoints_ = false;
  bool unhijack_ = false;  // timed waits are hijacked: stack copies need their return address
  Adopted on_adopted_;
  MayAdopt may_adopt_;
};

// A followed child's own ring: smaller than the root's, as children are many and most of
// their records are few (workers); its pointer table likewise.
// Not prefaulted: a short-lived child costs only the pages it writes. Its ring is a quarter
// of the root's (--probe-ring-bytes: 16 MiB by default), at least kMinChildRingBytes.
inline constexpr uint64_t kMinChildRingBytes = 4ULL << 20;
inline uint64_t child_ring_bytes(uint64_t root_ring_bytes) {
  return std::max(root_ring_bytes / 4, std::min(root_ring_bytes, kMinChildRingBytes));
}
inline constexpr uint64_t kChildPointerCapacity = 1ULL << 16;
inline constexpr uint64_t kChildThreadCapacity = 256;

}  // namespace profctl::probe
