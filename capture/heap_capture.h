// HeapCapture: the heap profile of one capture, wired end to end: the probes installed in
// the target (probe/HeapProbes), a thread that drains their ring from profctl's own
// mapping (never stopping the target), and the HeapCollector that unwinds and tracks the
// allocations (profile/). attach and run share it.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "attach/traced_process.h"
#include "base/result.h"
#include "probe/heap_probes.h"
#include "probe/ring_reader.h"
#include "probe/tsc_clock.h"
#include "profile/heap_collector.h"

namespace profctl {

struct HeapCaptureStats {
  uint64_t records = 0;         // ring records handed to the collector
  uint64_t ring_dropped = 0;    // records the target could not write (ring full)
  uint64_t table_dropped = 0;   // sampled pointers the target could not track
  uint64_t thread_dropped = 0;  // events of threads without a slot (table full)
  uint64_t foreign = 0;         // records of other processes (forked children)
};

class HeapCapture {
 public:
  // Installs the probes (stopping the world once) and starts draining.
  static Result<std::unique_ptr<HeapCapture>> start(TracedProcess& tp,
                                                    const probe::HeapProbeOptions& options,
                                                    HeapCollector::UnwinderFactory factory);
  ~HeapCapture();
  HeapCapture(const HeapCapture&) = delete;
  HeapCapture& operator=(const HeapCapture&) = delete;

  // Call after the target is detached (the probes removed): drains what is left in the
  // ring, stops the drain thread and the collector.
  void finish();

  // Live counters for the status line (any thread).
  uint64_t records() const { return records_.load(std::memory_order_relaxed); }
  uint64_t dropped() const;

  HeapCollector& collector() { return *collector_; }
  const std::vector<std::string>& notes() const { return probes_->notes(); }
  HeapCaptureStats stats() const;
  uint64_t now_ns() const;  // on the records' clock (CLOCK_MONOTONIC)
  bool gone_by_exec() const { return probes_->gone_by_exec(); }

 private:
  HeapCapture() = default;
  void drain_loop();
  size_t drain_once();

  std::shared_ptr<probe::HeapProbes> probes_;
  std::unique_ptr<probe::RingReader> reader_;
  std::unique_ptr<HeapCollector> collector_;
  probe::TscClock clock_;
  pid_t pid_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> records_{0};
  std::thread drainer_;
  bool finished_ = false;
};

}  // namespace profctl
