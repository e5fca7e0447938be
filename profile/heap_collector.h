// SPDX-License-Identifier: MIT
// HeapCollector: the heap profile's sink beside the Collector. Allocation events (sampled
// allocations with the registers and stack copy the probe recorded, and frees of sampled
// pointers) are queued by the thread that drains the probe ring and processed in order on a
// worker of their own: allocations unwound (the same unwinder as snapshots) and interned,
// then handed to the HeapTracker. The queue is bounded: past it, events are dropped and
// counted (a dropped allocation's free is then an unknown free).
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "attach/snapshot.h"
#include "profile/heap_profile.h"
#include "profile/stack_table.h"
#include "unwind/unwinder.h"

namespace profctl {

struct AllocEvent {
  enum class Kind { kAlloc, kFree };
  Kind kind = Kind::kAlloc;
  uint64_t ptr = 0;
  uint64_t size = 0;  // kAlloc: bytes requested
  uint64_t time_ns = 0;
  pid_t tid = 0;
  std::optional<Snapshot> snap;  // kAlloc: at the allocating function's entry
};

struct HeapCollectorStats {
  uint64_t unwound = 0;
  uint64_t dropped = 0;    // events dropped because the queue was full
  uint64_t truncated = 0;  // stacks that did not reach their outermost frame
};

class HeapCollector {
 public:
  using UnwinderFactory = std::function<std::unique_ptr<Unwinder>()>;
  HeapCollector(UnwinderFactory factory, uint64_t mem_rate, size_t max_queued = 1 << 16);
  ~HeapCollector();
  HeapCollector(const HeapCollector&) = delete;
  HeapCollector& operator=(const HeapCollector&) = delete;

  void push(AllocEvent&& e);
  // Drains the queue and stops the worker; the tracker and stacks are final afterwards.
  void finish();

  HeapTracker& tracker() { return tracker_; }
  const StackTable& stacks() const { return stacks_; }
  const HeapCollectorStats& stats() const { return stats_; }

 private:
  void worker_main(const UnwinderFactory& factory);

  size_t max_queued_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<AllocEvent> queue_;
  bool done_ = false;
  uint64_t dropped_ = 0;
  std::thread worker_;
  // Worker-owned until finish().
  HeapTracker tracker_;
  StackTable stacks_;
  HeapCollectorStats stats_;
};

}  // namespace profctl
