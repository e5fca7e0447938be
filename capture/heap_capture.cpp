#include "capture/heap_capture.h"

#include <time.h>

#include "base/log.h"
#include "probe/abi/probe_abi.h"

namespace profctl {

Result<std::unique_ptr<HeapCapture>> HeapCapture::start(TracedProcess& tp,
                                                        const probe::HeapProbeOptions& options,
                                                        HeapCollector::UnwinderFactory factory) {
  std::unique_ptr<HeapCapture> hc(new HeapCapture());
  hc->pid_ = tp.pid();
  hc->clock_ = probe::TscClock::calibrate(std::chrono::milliseconds(10));
  auto probes = probe::HeapProbes::install(tp, options);
  if (!probes) {
    return probes.error();
  }
  hc->probes_ = std::move(*probes);
  hc->reader_ = std::make_unique<probe::RingReader>(hc->probes_->area());
  hc->collector_ =
      std::make_unique<HeapCollector>(std::move(factory), static_cast<uint64_t>(options.mem_rate));
  hc->collector_->tracker().set_start(hc->now_ns());
  hc->drainer_ = std::thread([p = hc.get()] { p->drain_loop(); });
  logger("probe")->debug("heap probes installed: {} functions", hc->probes_->probed());
  return hc;
}

uint64_t HeapCapture::now_ns() const {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ULL + static_cast<uint64_t>(ts.tv_nsec);
}

size_t HeapCapture::drain_once() {
  size_t n = reader_->drain([this](const probe::RecordView& v) {
    probe::ProbeRecord r = probe::to_probe_record(v);
    const uint64_t t = clock_.to_monotonic_ns(r.tsc);
    // A realloc that moved: its old pointer is freed before the new one is allocated.
    if (r.flags & PROBE_REC_FREED) {
      AllocEvent f;
      f.kind = AllocEvent::Kind::kFree;
      f.ptr = r.args[0];
      f.time_ns = t;
      f.tid = r.tid;
      collector_->push(std::move(f));
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
      collector_->push(std::move(a));
    }
  });
  records_.fetch_add(n, std::memory_order_relaxed);
  return n;
}

void HeapCapture::drain_loop() {
  while (!stop_.load(std::memory_order_acquire)) {
    if (drain_once() == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
}

void HeapCapture::finish() {
  if (finished_) {
    return;
  }
  finished_ = true;
  stop_.store(true, std::memory_order_release);
  if (drainer_.joinable()) {
    drainer_.join();
  }
  while (drain_once() > 0) {
  }
  HeapCaptureStats s = stats();
  collector_->tracker().note_table_dropped(s.table_dropped);
  collector_->tracker().note_dropped(s.ring_dropped);
  collector_->finish();
  auto c = probes_->area().counters();
  const auto& rs = reader_->stats();
  logger("probe")->debug(
      "heap: {} records read ({} written by the target), {} dropped (ring full), {} untracked "
      "pointers, {} threads without a slot, {} foreign, {} abandoned, {} corrupt; {} unwound, {} "
      "truncated stacks",
      s.records, c.records_written, s.ring_dropped, s.table_dropped, c.dropped_thread_table_full,
      rs.foreign_pid, rs.abandoned, rs.corrupt, collector_->stats().unwound,
      collector_->stats().truncated);
}

uint64_t HeapCapture::dropped() const {
  auto c = probes_->area().counters();
  return c.dropped_ring_full + c.dropped_ptr_table_full + c.dropped_thread_table_full;
}

HeapCaptureStats HeapCapture::stats() const {
  HeapCaptureStats s;
  auto c = probes_->area().counters();
  s.records = records_.load();
  s.ring_dropped = c.dropped_ring_full;
  s.table_dropped = c.dropped_ptr_table_full;
  s.thread_dropped = c.dropped_thread_table_full;
  s.foreign = reader_->stats().foreign_pid;
  return s;
}

HeapCapture::~HeapCapture() {
  if (!finished_) {
    stop_.store(true);
    if (drainer_.joinable()) {
      drainer_.join();
    }
  }
}

}  // namespace profctl
