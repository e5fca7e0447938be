// SPDX-License-Identifier: MIT
#include "profile/heap_collector.h"

#include <algorithm>

namespace profctl {

size_t HeapCollector::stack_bytes_of(const AllocEvent& e) {
  return e.snap ? e.snap->stack_size : (e.walked ? e.walked->pcs.size() * 8 : 0);
}

HeapCollector::HeapCollector(UnwinderFactory factory, uint64_t mem_rate, HeapLimits limits)
    : limits_(limits),
      tracker_(mem_rate, limits.tracker),
      stacks_(limits.max_stack_frames),
      queue_({limits.max_queued, limits.max_queued_bytes}, &stack_bytes_of, std::move(factory),
             [this](std::unique_ptr<Unwinder>& u, AllocEvent& e) { process(u.get(), e); }) {}

HeapCollector::~HeapCollector() { finish(); }

bool HeapCollector::push(AllocEvent&& e) {
  const bool alloc = e.kind == AllocEvent::Kind::kAlloc;
  if (queue_.try_push(std::move(e))) {
    return true;
  }
  ++(alloc ? allocs_refused_ : frees_refused_);
  return false;
}

void HeapCollector::push_all(std::vector<AllocEvent>& batch, bool wait,
                             const std::function<void()>& idle) {
  // Events that need no unwinding (walked stacks, frees) are handled on the calling thread
  // when nothing is queued before them (BoundedWorker::handle_here).
  const bool cheap = std::none_of(batch.begin(), batch.end(),
                                  [](const AllocEvent& e) { return e.snap != nullptr; });
  if (cheap && queue_.handle_here(batch, [this](AllocEvent& e) { process(nullptr, e); })) {
    return;
  }
  queue_.push_all(batch, wait, idle, [this](const AllocEvent& e) {
    ++(e.kind == AllocEvent::Kind::kAlloc ? allocs_refused_ : frees_refused_);
  });
}

void HeapCollector::finish() {
  if (!queue_.finish()) {
    return;
  }
  const auto q = queue_.stats();
  stats_.dropped = q.dropped;
  stats_.allocs_dropped = allocs_refused_;
  stats_.frees_dropped = frees_refused_;
  stats_.max_queued_bytes = q.max_bytes;
  tracker_.note_queue_dropped(allocs_refused_);
  tracker_.note_frees_dropped(frees_refused_);
}

std::vector<std::string> HeapCollector::notes() const {
  // The queue's drops are not here: they are the heap profile's loss (capture/), which
  // every output states with the ring's, in one set of numbers.
  std::vector<std::string> out;
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

void HeapCollector::direct_alloc(uint64_t ptr, uint64_t size, uint64_t time_ns, pid_t tid,
                                 pid_t pid, uint32_t space, uint64_t ring, uint64_t id,
                                 std::span<const uint64_t> pcs) {
  ++stats_.walked;
  const StackId stack = walked_.resolve(stacks_, ring, id, pcs);
  stats_.unknown_stack_ids = walked_.unknown();
  tracker_.on_alloc(ptr, size, stack, time_ns, tid, pid, space);
}

void HeapCollector::process(Unwinder* unwinder, AllocEvent& e) {
  if (e.kind == AllocEvent::Kind::kFree) {
    direct_free(e.ptr, e.time_ns);
    return;
  }
  if (e.walked) {
    direct_alloc(e.ptr, e.size, e.time_ns, e.tid, e.pid, e.space, e.walked->ring, e.walked->id,
                 e.walked->pcs);
    return;
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
  tracker_.on_alloc(e.ptr, e.size, stack, e.time_ns, e.tid, e.pid, e.space);
}

}  // namespace profctl
