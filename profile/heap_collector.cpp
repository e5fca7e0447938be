// SPDX-License-Identifier: MIT
#include "profile/heap_collector.h"

namespace profctl {

HeapCollector::HeapCollector(UnwinderFactory factory, uint64_t mem_rate, size_t max_queued)
    : max_queued_(max_queued), tracker_(mem_rate) {
  worker_ = std::thread([this, f = std::move(factory)] { worker_main(f); });
}

HeapCollector::~HeapCollector() { finish(); }

void HeapCollector::push(AllocEvent&& e) {
  {
    std::lock_guard lock(mu_);
    if (queue_.size() >= max_queued_) {
      ++dropped_;
      return;
    }
    queue_.push_back(std::move(e));
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
  tracker_.note_dropped(dropped_);
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
