// SPDX-License-Identifier: MIT
// HeapCollector: the heap profile's sink beside the Collector. Allocation events (sampled
// allocations with the registers and stack copy the probe recorded, and frees of sampled
// pointers) are queued by the thread that drains the probe ring and processed in order on a
// worker of their own: allocations unwound (the same unwinder as snapshots) and interned,
// then handed to the HeapTracker. Memory is bounded whatever the records say (they come
// from memory the target can write): the queue in events and in stack bytes (past it,
// events are dropped and counted; a dropped allocation's free is then an unknown free),
// the tracker in live pointers and buckets, the stack table in frames (HeapLimits).
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "attach/snapshot.h"
#include "profile/bounded_worker.h"
#include "profile/heap_profile.h"
#include "profile/stack_table.h"
#include "profile/walked_stacks.h"
#include "unwind/unwinder.h"

namespace profctl {

struct AllocEvent {
  enum class Kind { kAlloc, kFree };
  Kind kind = Kind::kAlloc;
  uint64_t ptr = 0;
  uint64_t size = 0;  // kAlloc: bytes requested
  uint64_t time_ns = 0;
  pid_t tid = 0;
  pid_t pid = 0;                      // kAlloc: the process, when the capture follows several
  uint32_t space = 0;                 // kAlloc: its image, when not the target's (an exec'd child)
  std::unique_ptr<Snapshot> snap;     // kAlloc: at the allocating function's entry
  std::optional<WalkedStack> walked;  // kAlloc: the stack as the target walked it (no snap)
};

struct HeapCollectorStats {
  uint64_t unwound = 0;
  uint64_t dropped = 0;            // events dropped because the queue was full
  uint64_t allocs_dropped = 0;     // of them, allocations
  uint64_t frees_dropped = 0;      // of them, frees
  uint64_t truncated = 0;          // stacks that did not reach their outermost frame
  uint64_t walked = 0;             // allocations whose stack the target walked (not unwound here)
  uint64_t unknown_stack_ids = 0;  // walked stacks named by an id never defined: empty
  size_t max_queued_bytes = 0;     // the most stack bytes the queue held at once
};

struct HeapLimits {
  size_t max_queued = 1 << 16;                  // events waiting to be unwound
  size_t max_queued_bytes = size_t{128} << 20;  // their stack copies, together
  HeapTrackerLimits tracker;
  size_t max_stack_frames = size_t{1} << 23;  // frames of all unique stacks (~256 MiB)
};

class HeapCollector {
 public:
  using UnwinderFactory = std::function<std::unique_ptr<Unwinder>()>;
  HeapCollector(UnwinderFactory factory, uint64_t mem_rate, HeapLimits limits = {});
  ~HeapCollector();
  HeapCollector(const HeapCollector&) = delete;
  HeapCollector& operator=(const HeapCollector&) = delete;

  // Queues an event for the worker; false (counted) when the queue is full.
  bool push(AllocEvent&& e);
  // Queues a batch of events in order and clears it: wait, for room instead of dropping
  // (`idle` runs while it waits); else as push() for each.
  void push_all(std::vector<AllocEvent>& batch, bool wait, const std::function<void()>& idle);
  // Drains the queue and stops the worker; the tracker and stacks are final afterwards.
  void finish();
  // After finish(): lines for the capture's warnings about the bounds that were reached.
  std::vector<std::string> notes() const;

  // A run of events handled on the calling thread as they come (no AllocEvent): true when
  // the worker has nothing queued or in hand (BoundedWorker::begin_direct); until
  // end_direct() only direct_* may be called, in the events' order. At --mem-rate 1 the
  // drain makes millions of events a second, and building, batching and destroying an
  // AllocEvent for each was a fifth of the drain thread's time.
  bool begin_direct() { return queue_.begin_direct(); }
  void end_direct() { queue_.end_direct(); }
  void direct_free(uint64_t ptr, uint64_t time_ns) { tracker_.on_free(ptr, time_ns); }
  // An allocation whose stack the target walked: `ring`'s `id`, defined by `pcs` if any.
  void direct_alloc(uint64_t ptr, uint64_t size, uint64_t time_ns, pid_t tid, pid_t pid,
                    uint32_t space, uint64_t ring, uint64_t id, std::span<const uint64_t> pcs);

  HeapTracker& tracker() { return tracker_; }
  const StackTable& stacks() const { return stacks_; }
  const HeapCollectorStats& stats() const { return stats_; }
  // Events the full queue refused so far (any thread: the status line).
  uint64_t queue_dropped() const { return queue_.stats().dropped; }

 private:
  static size_t stack_bytes_of(const AllocEvent& e);
  // On the worker; or on push_all's thread for events without a stack copy (unwinder null)
  // while the worker waits (BoundedWorker::handle_here).
  void process(Unwinder* unwinder, AllocEvent& e);

  HeapLimits limits_;
  // Worker-owned until finish() (lent to push_all's thread by handle_here).
  HeapTracker tracker_;
  StackTable stacks_;
  WalkedStacks walked_;
  HeapCollectorStats stats_;
  // The pushing thread's (the ring's drain): events the full queue refused, by kind.
  uint64_t allocs_refused_ = 0;
  uint64_t frees_refused_ = 0;
  // Last: its worker runs process() on the members above, so it stops before they go.
  BoundedWorker<AllocEvent, std::unique_ptr<Unwinder>> queue_;
};

}  // namespace profctl
