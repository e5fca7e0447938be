// SPDX-License-Identifier: MIT
#include "profile/heap_collector.h"

#include <algorithm>

namespace profctl {

namespace {
size_t stack_bytes_of(const AllocEvent& e) { return e.snap ? e.snap->stack_size : 0; }
}  // namespace

HeapCollector::HeapCollector(UnwinderFactory factory, uint64_t mem_rate, HeapLimits limits)
    : limits_(limits), tracker_(mem_rate, limits.tracker), stacks_(limits.max_stack_frames) {
  worker_ = std::thread([this, f = std::move(factory)] { worker_main(f); });
}

HeapCollector::~HeapCollector() { finish(); }

void HeapCollector::push(AllocEvent&& e) {
  const size_t bytes = stack_bytes_of(e);
  {
    std::lock_guard lock(mu_);
    if (queue_.size() >= limits_.max_queued || queued_bytes_ + bytes > limits_.max_queued_bytes) {
      ++dropped_;
      return;
    }
    queue_.push_back(std::move(e));
    queued_bytes_ += bytes;
    max_queued_bytes_seen_ = std::max(max_queued_bytes_seen_, queued_bytes_);
  }
  cv_.notify_one();
}

void HeapCollector::finish() {
  {
    std::lock_guard lock(mu_);
    if (done_ && !worker_.joinable()) {
      return;
    }
    done_ = true;
  }
  cv_.notify_one();
  if (worker_.joinable()) {
    worker_.join();
  }
  stats_.dropped = dropped_;
  stats_.max_queued_bytes = max_queued_bytes_seen_;
  tracker_.note_queue_dropped(dropped_);
}

std::vector<std::string> HeapCollector::notes() const {
  std::vector<std::string> out;
  if (stats_.dropped > 0) {
    out.push_back(std::to_string(stats_.dropped) +
                  " allocation records were dropped: unwinding could not keep up (at most " +
                  std::to_string(limits_.max_queued) + " records or " +
                  std::to_string(limits_.max_queued_bytes >> 20) + " MiB of stacks wait)");
  }
  if (const uint64_t n = tracker_.counters().capped; n > 0) {
    out.push_back(std::to_string(n) +
                  " sampled allocations were not counted: the heap profile "
                  "reached its bound of " +
                  std::to_string(limits_.tracker.max_live) + " live pointers or " +
                  std::to_string(limits_.tracker.max_buckets) + " (stack, size) buckets");
  }
  if (const uint64_t n = stacks_.capped(); n > 0) {
    out.push_back(std::to_string(n) +
                  " allocation stacks were not kept (shown as empty): the "
                  "heap profile reached its bound of " +
                  std::to_string(limits_.max_stack_frames) + " frames of unique stacks");
  }
  return out;
}

void HeapCollector::worker_main(const UnwinderFactory& factory) {
  std::unique_ptr<Unwinder> unwinder = factory();
  for (;;) {
    AllocEvent e;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return done_ || !queue_.empty(); });
      if (queue_.empty()) {
        return;
      }
      e = std::move(queue_.front());
      queue_.pop_front();
      queued_bytes_ -= stack_bytes_of(e);
    }
    if (e.kind == AllocEvent::Kind::kFree) {
      tracker_.on_free(e.ptr, e.time_ns);
      continue;
    }
    StackId stack = 0;
    if (e.snap) {
      UnwindResult r = unwinder->unwind(*e.snap);
      ++stats_.unwound;
      stats_.truncated += r.truncated ? 1 : 0;
      stack = stacks_.intern(r.frames);
    } else {
      stack = stacks_.intern({});
    }
    tracker_.on_alloc(e.ptr, e.size, stack, e.time_ns, e.tid);
  }
}

}  // namespace profctl
