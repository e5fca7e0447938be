// SPDX-License-Identifier: MIT
#include "capture/probe_capture.h"

#include <poll.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>

#include "attach/proc.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/saturating.h"
#include "probe/abi/probe_abi.h"
#include "probe/startup_hook.h"

namespace profctl {

namespace {

// The counters a child's ring adds to the capture's (foreign_pid_events stays the root's: a
// child's own records are not foreign; inflight is a state, not a count).
void add_counters(probe::ProbeCounters& sum, const probe::ProbeCounters& k) {
  sum.records_written = sat_add(sum.records_written, k.records_written);
  sum.dropped_ring_full = sat_add(sum.dropped_ring_full, k.dropped_ring_full);
  sum.dropped_ptr_table_full = sat_add(sum.dropped_ptr_table_full, k.dropped_ptr_table_full);
  sum.dropped_thread_table_full =
      sat_add(sum.dropped_thread_table_full, k.dropped_thread_table_full);
  sum.stack_copy_failed = sat_add(sum.stack_copy_failed, k.stack_copy_failed);
  sum.waits_seen = sat_add(sum.waits_seen, k.waits_seen);
  sum.waits_recorded = sat_add(sum.waits_recorded, k.waits_recorded);
  sum.dropped_ring_alloc = sat_add(sum.dropped_ring_alloc, k.dropped_ring_alloc);
  sum.dropped_ring_free = sat_add(sum.dropped_ring_free, k.dropped_ring_free);
  sum.dropped_ring_mutex = sat_add(sum.dropped_ring_mutex, k.dropped_ring_mutex);
  sum.dropped_ring_block = sat_add(sum.dropped_ring_block, k.dropped_ring_block);
  sum.walk_fallbacks = sat_add(sum.walk_fallbacks, k.walk_fallbacks);
  sum.ring_waits = sat_add(sum.ring_waits, k.ring_waits);
  sum.dropped_stalled = sat_add(sum.dropped_stalled, k.dropped_stalled);
}

}  // namespace

Result<std::unique_ptr<ProbeCapture>> ProbeCapture::start(TracedProcess& tp,
                                                          const ProbeCaptureOptions& options,
                                                          UnwinderFactory heap_unwinder,
                                                          UnwinderFactory wait_unwinder) {
  std::unique_ptr<ProbeCapture> pc(new ProbeCapture());
  pc->pid_ = tp.pid();
  pc->comm_ = read_comm(tp.pid());
  pc->options_ = options;
  // PROFCTL_PROBE_WALK=0: records carry stack copies that profctl unwinds (as before ABI v7):
  // to compare the walk in the target with profctl's unwinders.
  if (const char* w = std::getenv("PROFCTL_PROBE_WALK"); w != nullptr && std::string(w) == "0") {
    pc->options_.walk_in_target = false;
  }
  const ProbeCaptureOptions& options_in = pc->options_;
  pc->clock_ = probe::TscClock::calibrate(std::chrono::milliseconds(10));
  probe::ProbeOptions po;
  po.heap = options.heap;
  po.waits = options.block || options.mutex;
  po.mem_rate = options.heap ? options.mem_rate : 0;
  po.stack_bytes = options.stack_bytes;
  po.ring_bytes = options.ring_bytes;
  po.allow_breakpoints = options.allow_breakpoints;
  if (options.block) {
    // At least one tick: a rate of 0 would mean "off" to the blob.
    po.block_rate_ticks = std::max<uint64_t>(
        1, static_cast<uint64_t>(std::llround(static_cast<double>(options.block_rate_ns) *
                                              pc->clock_.ticks_per_ns())));
  }
  po.mutex_fraction = options.mutex ? std::max<uint64_t>(1, options.mutex_fraction) : 0;
  po.unwind_bytes = options_in.walk_in_target ? po.unwind_bytes : 0;
  po.ring_wait = options.ring_wait;
  po.liveness_ticks = static_cast<uint64_t>(
      static_cast<double>(std::chrono::nanoseconds(options.liveness).count()) *
      pc->clock_.ticks_per_ns());
  if (options_in.walk_in_target) {
    pc->tables_ = std::make_unique<ProbeTables>(pc->pid_);
    pc->tables_->prepare();
  }
  auto probes = probe::Probes::install(tp, po);
  if (!probes) {
    return probes.error();
  }
  pc->probes_ = std::move(*probes);
  pc->reader_ = std::make_unique<probe::RingReader>(pc->probes_->area());
  if (options.heap) {
    HeapLimits limits;
    // No more live sampled pointers than the target's pointer table can hold (2^22 by
    // default, ~200 MiB of tracker): more would come from records that lie.
    limits.tracker.max_live = static_cast<size_t>(po.pointer_capacity);
    pc->heap_ = std::make_unique<HeapCollector>(std::move(heap_unwinder),
                                                static_cast<uint64_t>(options.mem_rate), limits);
    pc->heap_->tracker().set_start(pc->now_ns());
  }
  if (po.waits) {
    auto probes_ptr = pc->probes_;
    pc->waits_ = std::make_unique<WaitCollector>(
        std::move(wait_unwinder),
        [probes_ptr](uint64_t pc_) { return probes_ptr->in_lock_function(pc_); },
        options.block ? std::max<uint64_t>(1, options.block_rate_ns) : 0, po.mutex_fraction);
  }
  pc->probe_options_ = po;
  if (options.follow_children) {
    pc->wire(*pc->probes_);
  }
  if (pc->tables_) {
    // Read before the install; copied in now. Records made before carry stack copies
    // (profctl unwinds them), so nothing is lost in between.
    pc->tables_->refresh(pc->probes_->area());
    pc->tables_at_ = std::chrono::steady_clock::now();
  }
  pc->beating_.store(true);
  pc->heartbeat_ = std::thread([p = pc.get()] { p->heartbeat_loop(); });
  pc->drainer_ = std::thread([p = pc.get()] { p->drain_loop(); });
  logger("probe")->debug("probes installed: {} functions", pc->probes_->probed());
  if (options.heap) {
    logger("probe")->debug("heap probes installed");
  }
  return pc;
}

uint64_t ProbeCapture::now_ns() const { return monotonic_ns(); }

void ProbeCapture::wire(probe::Probes& probes) {
  probes.set_on_adopted([this](std::shared_ptr<probe::Probes> child) { adopted(std::move(child)); },
                        [this] {
                          if (live_rings_.load() < kMaxChildRings) {
                            return true;
                          }
                          std::lock_guard lock(children_mu_);
                          children_capped_ = true;
                          return false;
                        });
}

bool ProbeCapture::child_exec(TracedProcess& child) {
  if (!options_.follow_children || stop_.load()) {
    return false;
  }
  if (live_rings_.load() >= kMaxChildRings) {
    std::lock_guard lock(children_mu_);
    children_capped_ = true;
    return false;
  }
  const pid_t pid = child.pid();
  auto hook = probe::dynamic_linker_hook(pid);
  if (!hook) {
    // A static program (no ld.so to hold it at before its constructors) is not probed.
    note_child("child process " + std::to_string(pid) +
               " is not probed after its exec: " + hook.error().message());
    return false;
  }
  if (auto r = child.run_to_hook(*hook, [pid] { return probe::link_map_consistent(pid); }); !r) {
    note_child("child process " + std::to_string(pid) +
               " is not probed after its exec: " + r.error().message());
    return false;
  }
  probe::ProbeOptions po = probe_options_;
  po.child = true;
  auto probes = probe::Probes::install(child, po);
  if (!probes) {
    note_child("child process " + std::to_string(pid) +
               " is not probed after its exec: " + probes.error().message());
    return false;
  }
  wire(**probes);
  live_rings_.fetch_add(1);
  add_ring(child, std::move(*probes), child.space_id());
  return true;
}

void ProbeCapture::note_child(std::string line) {
  logger("probe")->debug("{}", line);
  std::lock_guard lock(children_mu_);
  if (child_notes_++ < kMaxChildNotes) {
    notes_children_.push_back(std::move(line));
  }
}

void ProbeCapture::adopted(std::shared_ptr<probe::Probes> child) {
  std::lock_guard lock(children_mu_);
  pending_[child->pid()] = std::move(child);
  live_rings_.fetch_add(1);
}

void ProbeCapture::followed(TracedProcess& child) {
  std::shared_ptr<probe::Probes> p;
  {
    std::lock_guard lock(children_mu_);
    auto it = pending_.find(child.pid());
    if (it == pending_.end()) {
      return;  // not adopted (cleaned instead, or not forked from a probed process)
    }
    p = std::move(it->second);
    pending_.erase(it);
  }
  child.add_observer(probe::Probes::observer_for(p));
  add_ring(child, std::move(p), 0);
}

void ProbeCapture::add_ring(TracedProcess& child, std::shared_ptr<probe::Probes> p,
                            uint32_t space) {
  auto ring = std::make_unique<ChildRing>();
  ring->space = space;
  ring->pid = child.pid();
  // Opened while the child is held at its first stop: it cannot have been reaped.
  ring->pidfd = Fd(static_cast<int>(::syscall(SYS_pidfd_open, child.pid(), 0)));
  ring->comm = read_comm(child.pid());
  ring->reader = std::make_unique<probe::RingReader>(p->area());
  if (options_.walk_in_target) {
    // Placed by the drain thread (keep_alive), off the tracing thread; a fork starts from the
    // target's placement and reads no ELF when its mappings are the same.
    ring->tables = tables_ ? std::make_unique<ProbeTables>(child.pid(), tables_->placement())
                           : std::make_unique<ProbeTables>(child.pid());
  }
  ring->probes = std::move(p);
  std::lock_guard lock(children_mu_);
  // Tags 1..65535 in bits 48-63, above every user-space address of x86-64.
  ring->tag = static_cast<uint64_t>((children_total_++ % 0xffff) + 1) << 48;
  names_[ring->tag >> 48] = {ring->pid, ring->comm};
  children_.push_back(std::move(ring));
}

size_t ProbeCapture::children_probed() const {
  std::lock_guard lock(children_mu_);
  return children_total_;
}

// On the drain thread: a child that has exited writes nothing more; once its ring is
// drained, its counters are kept and its area is released (memfd, pages).
void ProbeCapture::retire_exited() {
  std::vector<std::unique_ptr<ChildRing>> gone;
  {
    std::lock_guard lock(children_mu_);
    for (auto it = children_.begin(); it != children_.end();) {
      pollfd p{(*it)->pidfd.get(), POLLIN, 0};
      if ((*it)->pidfd.valid() && ::poll(&p, 1, 0) == 1) {
        gone.push_back(std::move(*it));
        it = children_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& c : gone) {
    while (drain_ring(*c->reader, c->pid, c->tag, c->space) > 0) {
    }
    const probe::ProbeCounters k = c->probes->area().counters();
    std::lock_guard lock(children_mu_);
    add_counters(retired_, k);
    live_rings_.fetch_sub(1);
  }
}

size_t ProbeCapture::drain_once() {
  size_t n = drain_ring(*reader_, pid_, 0, 0);
  if (reader_->gave_up() && !ring_abandoned_) {
    // Nothing reads the ring any more: the probes need not record into it.
    ring_abandoned_ = true;
    probes_->area().set_enabled(false);
    logger("probe")->warn("probes: {}", reader_->note());
  }
  std::vector<ChildRing*> rings;
  {
    std::lock_guard lock(children_mu_);
    for (auto& c : children_) {
      rings.push_back(c.get());
    }
  }
  for (ChildRing* c : rings) {
    n += drain_ring(*c->reader, c->pid, c->tag, c->space);
  }
  retire_exited();
  return n;
}

size_t ProbeCapture::drain_ring(probe::RingReader& reader, pid_t pid, uint64_t tag,
                                uint32_t space) {
  // The process label: only when the capture follows children (the sampled profiles'
  // rule); the root's rows are then labelled too.
  const pid_t label = options_.follow_children ? pid : 0;
  // Counted here and added once per drain: an atomic add per record is a locked
  // instruction per record on the path that must keep up with the target.
  uint64_t walked = 0;
  uint64_t ids_new = 0;
  uint64_t copied = 0;
  bool direct = false;  // in a direct run of the heap collector
  size_t n = reader.drain([&](const probe::RecordView& v) {
    const probe_record& r = v.rec;  // walked records: the common fields and args[0..1]
    auto count_walked = [&] {
      ++walked;
      ids_new += v.pcs.empty() ? 0 : 1;
    };
    // A walked record names its stack (no copy to unwind); a full one carries the copy.
    auto stack_of = [&](auto& event) {
      if (v.walked) {
        count_walked();
        WalkedStack& w = event.walked.emplace();
        w.ring = tag;
        w.id = v.stack_id;
        if (!v.pcs.empty()) {
          w.pcs.assign(v.pcs.begin(), v.pcs.end());
        }
        return;
      }
      ++copied;
      event.snap = std::make_unique<Snapshot>(probe::to_snapshot(probe::to_probe_record(v)));
      event.snap->pid = pid;
      if (space != 0) {
        event.snap->space = space;
      }
    };
    const uint64_t t = clock_.to_monotonic_ns(r.tsc);
    if (r.kind == PROBE_KIND_BLOCK || r.kind == PROBE_KIND_MUTEX ||
        r.kind == PROBE_KIND_MUTEX_WAKE) {
      if (!waits_) {
        return;
      }
      WaitEvent e;
      e.mutex = (r.flags & PROBE_REC_WAIT_MUTEX) != 0;
      e.block = (r.flags & PROBE_REC_WAIT_BLOCK) != 0;
      e.lock_wait = r.kind == PROBE_KIND_MUTEX;
      e.wake = (r.flags & PROBE_REC_WAKE) != 0;
      e.start_ns = clock_.to_monotonic_ns(r.args[1]);
      e.end_ns = t;
      e.delay_ns = clock_.ticks_to_ns(r.value);
      e.lock = r.args[0] | tag;
      e.tid = r.tid;
      stack_of(e);
      push_wait(std::move(e));
      return;
    }
    if (!heap_) {
      return;
    }
    // A walked record needs nothing of the collector's worker: handled here, at once, while
    // the worker has nothing queued (a direct run; when the worker is busy, the records
    // are batched, and the next try is when the batch was flushed).
    if (v.walked && !direct && heap_batch_.empty()) {
      direct = heap_->begin_direct();
    }
    if (direct && v.walked) {
      if (r.flags & PROBE_REC_FREED) {
        heap_->direct_free(r.args[0] | tag, t);
      }
      if (r.flags & PROBE_REC_ALLOC) {
        count_walked();
        heap_->direct_alloc(r.ptr | tag, r.value, t, r.tid, label, space, tag, v.stack_id, v.pcs);
      }
      return;
    }
    if (direct) {  // a stack copy, for the worker's unwinder: queued, in order
      heap_->end_direct();
      direct = false;
    }
    // Built in place in the batch: at --mem-rate 1 this runs for every call the target
    // makes, and a moved AllocEvent is a hundred bytes.
    // A realloc that moved: its old pointer is freed before the new one is allocated.
    if (r.flags & PROBE_REC_FREED) {
      AllocEvent& f = heap_batch_.emplace_back();
      f.kind = AllocEvent::Kind::kFree;
      f.ptr = r.args[0] | tag;
      f.time_ns = t;
      f.tid = r.tid;
      heap_added();
    }
    if (r.flags & PROBE_REC_ALLOC) {
      AllocEvent& a = heap_batch_.emplace_back();
      a.kind = AllocEvent::Kind::kAlloc;
      a.ptr = r.ptr | tag;
      a.size = r.value;
      a.time_ns = t;
      a.tid = r.tid;
      a.pid = label;
      a.space = space;
      stack_of(a);
      heap_added();
    }
  });
  if (direct) {
    heap_->end_direct();
  }
  flush();
  records_.fetch_add(n, std::memory_order_relaxed);
  walked_.fetch_add(walked, std::memory_order_relaxed);
  ids_new_.fetch_add(ids_new, std::memory_order_relaxed);
  copied_.fetch_add(copied, std::memory_order_relaxed);
  return n;
}

probe::ProbeCounters ProbeCapture::counters() const {
  probe::ProbeCounters sum = probes_->area().counters();
  std::lock_guard lock(children_mu_);
  add_counters(sum, retired_);
  for (const auto& c : children_) {
    add_counters(sum, c->probes->area().counters());
  }
  return sum;
}

void ProbeCapture::heap_added() {
  if (heap_batch_.size() >= kBatch) {
    heap_->push_all(heap_batch_, options_.ring_wait, [this] { keep_alive(false); });
  }
}

void ProbeCapture::push_wait(WaitEvent&& e) {
  wait_batch_.push_back(std::move(e));
  if (wait_batch_.size() >= kBatch) {
    waits_->push_all(wait_batch_, options_.ring_wait, [this] { keep_alive(false); });
  }
}

void ProbeCapture::flush() {
  if (heap_ && !heap_batch_.empty()) {
    heap_->push_all(heap_batch_, options_.ring_wait, [this] { keep_alive(false); });
  }
  if (waits_ && !wait_batch_.empty()) {
    waits_->push_all(wait_batch_, options_.ring_wait, [this] { keep_alive(false); });
  }
}

// On the drain thread. The heartbeat says "profctl is alive and reading": a writer that
// finds the ring full waits only while it is fresh. A target that found it stale silenced
// its probes; they are enabled again here (unless the reader gave up on the ring), and the
// records dropped meanwhile are in the ring's drop counters.
void ProbeCapture::keep_alive(bool tables_too) {
  auto beat = [&](probe::Probes& p) {
    probe::SharedArea& a = p.area();
    if (a.stalled() && !ring_abandoned_ && !p.removing()) {
      a.resume_after_stall();
      stalls_.fetch_add(1, std::memory_order_relaxed);
    }
  };
  beat(*probes_);
  // Children are retired on this thread only: their pointers stay valid outside the lock.
  std::vector<ChildRing*> rings;
  {
    std::lock_guard lock(children_mu_);
    for (auto& c : children_) {
      rings.push_back(c.get());
    }
  }
  for (ChildRing* c : rings) {
    beat(*c->probes);
  }
  if (!tables_too) {
    return;
  }
  // A new child's tables at once; modules loaded since (dlopen): at most twice a second.
  for (ChildRing* c : rings) {
    if (c->tables && !c->tables->placed() && !c->tables_tried) {
      c->tables_tried = true;
      c->tables->refresh(c->probes->area());
    }
  }
  const auto now = std::chrono::steady_clock::now();
  if (now - tables_at_ < std::chrono::milliseconds(500)) {
    return;
  }
  tables_at_ = now;
  if (tables_) {
    tables_->refresh(probes_->area());
  }
  for (ChildRing* c : rings) {
    if (c->tables) {
      c->tables->refresh(c->probes->area());
    }
  }
}

void ProbeCapture::heartbeat_loop() {
  while (beating_.load(std::memory_order_acquire)) {
    probes_->area().heartbeat();
    {
      std::lock_guard lock(children_mu_);
      for (auto& c : children_) {
        c->probes->area().heartbeat();
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

void ProbeCapture::drain_loop() {
  while (!stop_.load(std::memory_order_acquire)) {
    keep_alive(true);
    if (drain_once() == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
}

void ProbeCapture::finish() {
  if (finished_) {
    return;
  }
  finished_ = true;
  stop_.store(true, std::memory_order_release);
  if (drainer_.joinable()) {
    drainer_.join();
  }
  // What the target wrote before the detach: a ring's worth at most, which one drain
  // consumes. A few more rounds for records committed meanwhile, but bounded: a process
  // that still writes into the area (a forked child, or anything holding the memfd) cannot
  // keep profctl here.
  for (int round = 0; round < 4 && drain_once() > 0; ++round) {
  }
  beating_.store(false, std::memory_order_release);
  if (heartbeat_.joinable()) {
    heartbeat_.join();
  }
  ProbeCaptureStats s = stats();
  // Read once: every loss below comes from this one copy of the target's counters.
  const probe::ProbeCounters k = counters();
  if (heap_) {
    heap_->tracker().note_table_dropped(k.dropped_ptr_table_full);
    heap_->tracker().note_dropped(k.dropped_ring_alloc);
    heap_->tracker().note_frees_dropped(k.dropped_ring_free);
    heap_->finish();
    if (options_.follow_children) {
      heap_->tracker().name_process(pid_, comm_);
      std::lock_guard lock(children_mu_);
      for (const auto& [tag, name] : names_) {
        heap_->tracker().name_process(name.first, name.second);
      }
    }
    const HeapCounters& hc = heap_->tracker().counters();
    losses_.heap = {hc.sampled_allocs, hc.ring_dropped, hc.queue_dropped, hc.capped};
    for (auto& n : heap_->notes()) {
      notes_.push_back(std::move(n));
    }
  }
  if (waits_) {
    if (options_.follow_children) {
      std::map<uint64_t, std::pair<pid_t, std::string>> by_tag{{0, {pid_, comm_}}};
      std::lock_guard lock(children_mu_);
      by_tag.insert(names_.begin(), names_.end());
      waits_->name_processes(std::move(by_tag));
    }
    waits_->finish();
    const WaitCollectorStats& w = waits_->stats();
    losses_.block = {w.block_events, k.dropped_ring_block, w.block_dropped, w.block_capped};
    losses_.mutex = {w.mutex_events, k.dropped_ring_mutex, w.mutex_dropped, w.mutex_capped};
    for (auto& n : waits_->notes()) {
      notes_.push_back(std::move(n));
    }
  }
  if (auto n = reader_->note(); !n.empty()) {
    notes_.push_back(std::move(n));
  }
  if (const uint64_t st = stalls_.load(); st > 0 || k.dropped_stalled > 0) {
    notes_.push_back(
        "profctl did not read the probe ring for " + std::to_string(options_.liveness.count()) +
        " ms " + std::to_string(st) + " times: the target stopped waiting for it and dropped " +
        std::to_string(k.dropped_stalled) + " records meanwhile (they are in the dropped counts)");
  }
  {
    std::lock_guard lock(children_mu_);
    if (children_capped_) {
      notes_.push_back("more than " + std::to_string(kMaxChildRings) +
                       " child processes probed at once: the others were cleaned of the probes "
                       "(their allocations and waits are not in the profiles)");
    }
  }
  auto c = counters();
  const auto& rs = reader_->stats();
  logger("probe")->debug(
      "probes: {} records read ({} written by the target), {} dropped (ring full), {} untracked "
      "pointers, {} threads without a slot, {} foreign, {} abandoned, {} corrupt, {} stacks cut; "
      "waits {} seen {} recorded; {} child processes probed",
      s.records, c.records_written, s.ring_dropped, s.table_dropped, c.dropped_thread_table_full,
      rs.foreign_pid, rs.abandoned, rs.corrupt, rs.stack_cut, c.waits_seen, c.waits_recorded,
      children_probed());
  logger("probe")->debug(
      "probes: {} stacks walked in the target ({} records defined a stack id), {} copied for "
      "profctl to unwind ({} where the walk could not finish); {} records waited for room in "
      "the ring, {} dropped while profctl did not read ({} stalls)",
      walked_.load(), ids_new_.load(), copied_.load(), c.walk_fallbacks, c.ring_waits,
      c.dropped_stalled, stalls_.load());
}

std::vector<std::string> ProbeCapture::notes() const {
  std::vector<std::string> out = probes_->notes();
  out.insert(out.end(), notes_.begin(), notes_.end());
  std::lock_guard lock(children_mu_);
  out.insert(out.end(), notes_children_.begin(), notes_children_.end());
  if (child_notes_ > kMaxChildNotes) {
    out.push_back(std::to_string(child_notes_ - kMaxChildNotes) +
                  " more child processes were not probed after their exec");
  }
  return out;
}

uint64_t ProbeCapture::dropped() const {
  uint64_t n = counters().dropped_ring_full;
  n = sat_add(n, heap_ ? heap_->queue_dropped() : 0);
  return sat_add(n, waits_ ? waits_->queue_dropped() : 0);
}

ProbeCaptureStats ProbeCapture::stats() const {
  ProbeCaptureStats s;
  auto c = counters();
  s.records = records_.load();
  s.ring_dropped = c.dropped_ring_full;
  s.table_dropped = c.dropped_ptr_table_full;
  s.thread_dropped = c.dropped_thread_table_full;
  s.foreign = reader_->stats().foreign_pid;
  s.waits_seen = c.waits_seen;
  s.waits_recorded = c.waits_recorded;
  return s;
}

ProbeCapture::~ProbeCapture() {
  if (!finished_) {
    stop_.store(true);
    if (drainer_.joinable()) {
      drainer_.join();
    }
  }
  beating_.store(false);
  if (heartbeat_.joinable()) {
    heartbeat_.join();
  }
}

}  // namespace profctl
