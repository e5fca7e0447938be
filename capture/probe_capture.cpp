// SPDX-License-Identifier: MIT
#include "capture/probe_capture.h"

#include <time.h>

#include <cmath>

#include "base/clock.h"
#include "base/log.h"
#include "base/saturating.h"
#include "probe/abi/probe_abi.h"

namespace profctl {

Result<std::unique_ptr<ProbeCapture>> ProbeCapture::start(TracedProcess& tp,
                                                          const ProbeCaptureOptions& options,
                                                          UnwinderFactory heap_unwinder,
                                                          UnwinderFactory wait_unwinder) {
  std::unique_ptr<ProbeCapture> pc(new ProbeCapture());
  pc->pid_ = tp.pid();
  pc->options_ = options;
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
  pc->drainer_ = std::thread([p = pc.get()] { p->drain_loop(); });
  logger("probe")->debug("probes installed: {} functions", pc->probes_->probed());
  if (options.heap) {
    logger("probe")->debug("heap probes installed");
  }
  return pc;
}

uint64_t ProbeCapture::now_ns() const { return monotonic_ns(); }

size_t ProbeCapture::drain_once() {
  size_t n = reader_->drain([this](const probe::RecordView& v) {
    probe::ProbeRecord r = probe::to_probe_record(v);
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
      e.lock = r.args[0];
      e.tid = r.tid;
      e.snap = probe::to_snapshot(std::move(r));
      e.snap->pid = pid_;
      waits_->push(std::move(e));
      return;
    }
    if (!heap_) {
      return;
    }
    // A realloc that moved: its old pointer is freed before the new one is allocated.
    if (r.flags & PROBE_REC_FREED) {
      AllocEvent f;
      f.kind = AllocEvent::Kind::kFree;
      f.ptr = r.args[0];
      f.time_ns = t;
      f.tid = r.tid;
      heap_->push(std::move(f));
    }
    if (r.flags & PROBE_REC_ALLOC) {
      AllocEvent a;
      a.kind = AllocEvent::Kind::kAlloc;
      a.ptr = r.ptr;
      a.size = r.value;
      a.time_ns = t;
      a.tid = r.tid;
      a.snap = probe::to_snapshot(std::move(r));
      a.snap->pid = pid_;
      heap_->push(std::move(a));
    }
  });
  records_.fetch_add(n, std::memory_order_relaxed);
  if (reader_->gave_up() && !ring_abandoned_) {
    // Nothing reads the ring any more: the probes need not record into it.
    ring_abandoned_ = true;
    probes_->area().set_enabled(false);
    logger("probe")->warn("probes: {}", reader_->note());
  }
  return n;
}

void ProbeCapture::drain_loop() {
  while (!stop_.load(std::memory_order_acquire)) {
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
  ProbeCaptureStats s = stats();
  // Read once: every loss below comes from this one copy of the target's counters.
  const probe::ProbeCounters k = probes_->area().counters();
  if (heap_) {
    heap_->tracker().note_table_dropped(k.dropped_ptr_table_full);
    heap_->tracker().note_dropped(k.dropped_ring_alloc);
    heap_->tracker().note_frees_dropped(k.dropped_ring_free);
    heap_->finish();
    const HeapCounters& hc = heap_->tracker().counters();
    losses_.heap = {hc.sampled_allocs, hc.ring_dropped, hc.queue_dropped, hc.capped};
    for (auto& n : heap_->notes()) {
      notes_.push_back(std::move(n));
    }
  }
  if (waits_) {
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
  auto c = probes_->area().counters();
  const auto& rs = reader_->stats();
  logger("probe")->debug(
      "probes: {} records read ({} written by the target), {} dropped (ring full), {} untracked "
      "pointers, {} threads without a slot, {} foreign, {} abandoned, {} corrupt, {} stacks cut; "
      "waits {} seen {} recorded",
      s.records, c.records_written, s.ring_dropped, s.table_dropped, c.dropped_thread_table_full,
      rs.foreign_pid, rs.abandoned, rs.corrupt, rs.stack_cut, c.waits_seen, c.waits_recorded);
}

std::vector<std::string> ProbeCapture::notes() const {
  std::vector<std::string> out = probes_->notes();
  out.insert(out.end(), notes_.begin(), notes_.end());
  return out;
}

uint64_t ProbeCapture::dropped() const {
  uint64_t n = probes_->area().counters().dropped_ring_full;
  n = sat_add(n, heap_ ? heap_->queue_dropped() : 0);
  return sat_add(n, waits_ ? waits_->queue_dropped() : 0);
}

ProbeCaptureStats ProbeCapture::stats() const {
  ProbeCaptureStats s;
  auto c = probes_->area().counters();
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
}

}  // namespace profctl
