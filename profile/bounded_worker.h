// SPDX-License-Identifier: MIT
// BoundedWorker: the one queue + worker thread behind every collector. Producers (the
// sampling thread, the thread that drains the probe ring) push items; one worker thread of
// its own takes them in push order and hands each to the handler, so no unwinding ever runs
// on a producer's path. Memory stays bounded whatever the event rate: the queue is bounded
// in items and, when the item says how many bytes it holds (a stack copy is up to
// --stack-bytes), in bytes; a droppable item that does not fit is dropped and counted, never
// queued. The worker's context (an Unwinder and its Dwfl, which are single-threaded) is made
// by a factory on the worker thread and used from that thread alone.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace profctl {

template <typename Item, typename Context>
class BoundedWorker {
 public:
  struct Limits {
    size_t max_items = std::numeric_limits<size_t>::max();
    size_t max_bytes = std::numeric_limits<size_t>::max();  // of bytes_of(item), summed
  };
  struct Stats {
    uint64_t dropped = 0;  // items try_push refused because the queue was full
    size_t max_items = 0;  // the most items queued at once
    size_t max_bytes = 0;  // the most bytes queued at once
  };
  using BytesOf = size_t (*)(const Item&);  // nullptr: items weigh nothing (items bound only)
  using Factory = std::function<Context()>;
  using Handler = std::function<void(Context&, Item&)>;

  // Starts the worker: it calls factory() once, on its own thread, then handler(context,
  // item) for every item in push order until finish(), then destroys the context, all on
  // that thread.
  BoundedWorker(Limits limits, BytesOf bytes_of, Factory factory, Handler handler)
      : limits_(limits), bytes_of_(bytes_of), handler_(std::move(handler)) {
    worker_ = std::thread([this, f = std::move(factory)] { run(f); });
  }
  ~BoundedWorker() { finish(); }
  BoundedWorker(const BoundedWorker&) = delete;
  BoundedWorker& operator=(const BoundedWorker&) = delete;

  // Queues a droppable item; false (and the drop counted) when the queue is full in items
  // or the item's bytes would pass the byte bound.
  bool try_push(Item&& item) {
    const size_t bytes = bytes_of_ ? bytes_of_(item) : 0;
    bool wake = false;
    {
      std::lock_guard lock(mu_);
      if (queue_.size() + in_hand_ >= limits_.max_items ||
          queued_bytes_ + bytes > limits_.max_bytes) {
        ++stats_.dropped;
        return false;
      }
      enqueue(std::move(item), bytes);
      wake = wake_due();
    }
    if (wake) {
      cv_.notify_one();
    }
    return true;
  }

  // Queues every item of `items` (in order, under one lock per run of items that fit, so a
  // producer with many items pays a lock and a wake-up per batch, not per item) and clears
  // it. wait: a full queue holds the producer until the worker makes room (back-pressure;
  // `idle` runs on the calling thread at least every millisecond meanwhile). !wait: an item
  // that does not fit is dropped and counted, and handed to `dropped` first.
  template <typename Idle, typename Dropped>
  void push_all(std::vector<Item>& items, bool wait, Idle&& idle, Dropped&& dropped) {
    bool wake = false;
    size_t i = 0;
    while (i < items.size()) {
      {
        std::unique_lock lock(mu_);
        while (i < items.size()) {
          const size_t bytes = bytes_of_ ? bytes_of_(items[i]) : 0;
          const bool fits = queue_.size() + in_hand_ < limits_.max_items &&
                            (queued_bytes_ == 0 || queued_bytes_ + bytes <= limits_.max_bytes);
          if (fits || (wait && done_)) {
            enqueue(std::move(items[i++]), bytes);
          } else if (!wait) {
            ++stats_.dropped;
            dropped(items[i++]);
          } else {
            break;
          }
        }
        if (i < items.size()) {
          cv_.notify_one();
          room_.wait_for(lock, std::chrono::milliseconds(1));
        } else {
          wake = wake_due();
        }
      }
      if (i < items.size()) {
        idle();
      }
    }
    items.clear();
    if (wake) {
      cv_.notify_one();
    }
  }

  // Queues an item that must not be lost, past the bounds if need be (the caller bounds how
  // many such items it pushes).
  void push(Item&& item) {
    const size_t bytes = bytes_of_ ? bytes_of_(item) : 0;
    bool wake = false;
    {
      std::lock_guard lock(mu_);
      enqueue(std::move(item), bytes);
      wake = wake_due();
    }
    if (wake) {
      cv_.notify_one();
    }
  }

  // Hands `items` to `direct` on the calling thread, in order, and clears it, when the worker
  // has nothing queued or in hand (so the order of items is kept); false, with `items`
  // untouched, otherwise. For items that need nothing of the worker's context: at --mem-rate
  // 1 the probe ring's drain makes millions of events a second that need no unwinding, and
  // moving each into the queue and waking the worker cost more than handling it (the
  // queue's cold memory, a second thread's CPU on a machine whose CPUs the target needs).
  // The worker waits while a direct run is in progress; what producers push meanwhile is
  // queued behind it.
  template <typename Direct>
  bool handle_here(std::vector<Item>& items, Direct&& direct) {
    if (!begin_direct()) {
      return false;
    }
    for (Item& item : items) {
      direct(item);
    }
    items.clear();
    end_direct();
    return true;
  }

  // The same for a run of items the caller handles one by one as they come, without
  // making them Items (ProbeCapture's drain at --mem-rate 1): true when nothing is queued
  // or in hand; then, until end_direct(), the caller handles what it would have pushed, in
  // order, and the worker waits. Pushing meanwhile is the caller's bug.
  bool begin_direct() {
    std::lock_guard lock(mu_);
    if (!queue_.empty() || in_hand_ != 0 || direct_ || done_) {
      return false;
    }
    direct_ = true;
    return true;
  }
  void end_direct() {
    bool wake = false;
    {
      std::lock_guard lock(mu_);
      direct_ = false;
      wake = direct_waiter_;  // an idle worker is not woken: a futex call per run
    }
    if (wake) {
      cv_.notify_one();
    }
  }

  // Lets the worker drain what is queued and joins it. True for the call that stopped the
  // worker, false afterwards; everything the handler wrote is visible once it returns.
  bool finish() {
    {
      std::lock_guard lock(mu_);
      if (done_) {
        return false;
      }
      done_ = true;
    }
    cv_.notify_one();
    if (worker_.joinable()) {
      worker_.join();
    }
    return true;
  }

  // Any thread; final after finish().
  Stats stats() const {
    std::lock_guard lock(mu_);
    return stats_;
  }

 private:
  struct Entry {
    Item item;
    size_t bytes;  // bytes_of(item), once
  };

  void enqueue(Item&& item, size_t bytes) {  // under mu_
    queue_.push_back(Entry{std::move(item), bytes});
    queued_bytes_ += bytes;
    stats_.max_items = std::max(stats_.max_items, queue_.size());
    stats_.max_bytes = std::max(stats_.max_bytes, queued_bytes_);
  }

  // Takes everything queued at once (one lock, and the two vectors trade places, so no
  // allocation per item: a deque allocated a node per few events, a malloc and a free per
  // ~4 records at --mem-rate 1), then hands the items over in runs, giving a run's room back
  // after it (one lock per run). Taken items count against the bounds until their run is
  // handled: the bounds are on what the worker holds, queued or in hand. An item's resources
  // (a stack copy) are released as soon as it is handled, so the bytes given back are free.
  void run(const Factory& factory) {
    Context context = factory();
    std::vector<Entry> taken;
    for (;;) {
      {
        std::unique_lock lock(mu_);
        // Items that trickle in (a sample per thread per tick, a thousand ticks a second)
        // are gathered for up to kLinger: a wake-up per item was a context switch each, on
        // both sides, most of profctl's context switches at 999 Hz. The first item after
        // an idle spell wakes the worker; then producers wake it only for a full run (or a
        // queue at a bound), or finish() does. Nothing the handler needs may depend on the
        // target still being alive by then (`run` reads the target's modules once ld.so
        // has loaded its libraries, capture_pipeline.cpp).
        if (queue_.empty() && !done_) {
          idle_ = true;
          cv_.wait(lock, [&] { return done_ || !queue_.empty(); });
          idle_ = false;
        }
        if (!done_ && !run_ready()) {
          cv_.wait_for(lock, kLinger, [&] { return done_ || run_ready(); });
        }
        if (direct_) {  // a producer's handle_here() run ends first
          direct_waiter_ = true;
          cv_.wait(lock, [&] { return !direct_; });
          direct_waiter_ = false;
        }
        if (queue_.empty()) {
          return;  // done_ and drained
        }
        taken.swap(queue_);
        in_hand_ = taken.size();
      }
      for (size_t i = 0; i < taken.size();) {
        const size_t first = i;
        const size_t end = std::min(taken.size(), i + kRun);
        size_t run_bytes = 0;
        for (; i < end; ++i) {
          handler_(context, taken[i].item);
          run_bytes += taken[i].bytes;
          [[maybe_unused]] Item spent = std::move(taken[i].item);
        }
        {
          std::lock_guard lock(mu_);
          queued_bytes_ -= run_bytes;
          in_hand_ -= end - first;
        }
        room_.notify_one();
      }
      taken.clear();
    }
  }
  static constexpr size_t kRun = 256;
  static constexpr std::chrono::milliseconds kLinger{10};

  // A run's worth is waiting, or the queue is at a bound (a producer may be waiting for
  // room). Under mu_.
  bool run_ready() const {
    return queue_.size() >= kRun || queue_.size() + in_hand_ >= limits_.max_items ||
           queued_bytes_ >= limits_.max_bytes / 2;
  }
  // Whether a producer should wake the worker now. Under mu_.
  bool wake_due() const { return idle_ || run_ready(); }

  const Limits limits_;
  const BytesOf bytes_of_;
  const Handler handler_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable room_;  // a producer in push_waiting waits here for room
  std::vector<Entry> queue_;      // guarded by mu_, as are the three below
  size_t queued_bytes_ = 0;       // of the queue and the worker's run in hand
  size_t in_hand_ = 0;            // items of the run the worker is handling
  bool done_ = false;
  bool idle_ = false;           // the worker waits for a first item (no timeout)
  bool direct_ = false;         // a producer is handling items itself (handle_here)
  bool direct_waiter_ = false;  // the worker waits for that to end
  Stats stats_;
  std::thread worker_;  // last: started once everything it uses exists
};

}  // namespace profctl
