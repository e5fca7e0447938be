// SPDX-License-Identifier: MIT
// Collector: the sampling session's sink. Snapshots are queued and unwound on a worker
// thread of their own (never on the stop path), interned, and aggregated into the cpu,
// wall and threadcreate profiles. A full queue drops the sample (or creation) and counts
// it; the count is reported, never hidden. Memory stays bounded whatever the event rate:
// the queue is bounded in items and in stack bytes, and thread creations are aggregated
// per stack once the per-creation detail cap is reached.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "attach/sample_sink.h"
#include "profile/bounded_worker.h"
#include "profile/profile_data.h"
#include "profile/stack_table.h"
#include "unwind/unwinder.h"

namespace profctl {

struct CollectorOptions {
  // The profiles it aggregates (capture/sources/ say which).
  bool cpu = false;
  bool wall = false;
  bool threadcreate = false;
  int64_t period_ns = 0;     // sampling interval, the cpu/wall period
  size_t max_queued = 4096;  // snapshots waiting to be unwound before samples are dropped
  // Stack bytes held by queued snapshots before samples and creations are dropped: a deep
  // stack copy is up to --stack-bytes, so an item count alone does not bound memory.
  size_t max_queued_bytes = size_t{128} << 20;
  // The first creations each get a row of their own, labelled with the creator (tid,
  // thread_name) and the new thread (new_tid); every later one is only added to its
  // stack's count, so a thread-churning target costs one row per stack, not per creation.
  size_t threadcreate_detail_cap = 1000;
  // Label every sample with its process (pid, comm): set when child processes are followed.
  bool process_labels = false;
};

struct CollectorStats {
  uint64_t unwound = 0;            // snapshots unwound
  uint64_t dropped = 0;            // samples dropped because unwinding fell behind
  uint64_t dropped_creations = 0;  // thread creations dropped for the same reason
  uint64_t truncated = 0;          // stacks that did not reach their outermost frame
  double unwind_s = 0;             // time the worker spent unwinding
  size_t max_queue = 0;            // deepest the queue got
};

class Collector : public SampleSink {
 public:
  // The factory runs on the worker thread: the unwinder (and its Dwfl) is used from that
  // thread alone until finish().
  using UnwinderFactory = std::function<std::unique_ptr<Unwinder>()>;
  Collector(UnwinderFactory factory, CollectorOptions opts);
  ~Collector() override;

  void on_sample(ThreadSample&& s) override;
  void on_thread_created(ThreadCreation&& c) override;
  void on_thread_exited(pid_t tid) override;

  // Drains the queue and stops the worker. Results are valid afterwards.
  void finish();

  const StackTable& stacks() const { return stacks_; }
  StackTable& stacks() { return stacks_; }
  const std::map<std::string, ProfileData>& profiles() const { return profiles_; }
  const CollectorStats& stats() const { return stats_; }

  // For a live view while the capture runs (any thread): the `n` innermost pcs with the most
  // cpu so far, as (space, pc) and cpu ns, most first.
  struct HotLeaf {
    uint32_t space = 0;
    uint64_t pc = 0;
    uint64_t cpu_ns = 0;
  };
  std::vector<HotLeaf> hottest_leaves(size_t n) const;

 private:
  using Item = std::variant<ThreadSample, ThreadCreation>;
  static size_t stack_bytes_of(const Item& item);
  static std::map<std::string, ProfileData> make_profiles(const CollectorOptions& opts);
  void handle(std::unique_ptr<Unwinder>& u, Item& item);  // on the worker
  void process(Unwinder& u, ThreadSample& s);
  void process(Unwinder& u, ThreadCreation& c);
  void flush_reused(pid_t tid);

  CollectorOptions opts_;
  // Producer side (the sampling thread only): samples of threads that did not run, merged
  // per thread until that thread's next snapshot, so that tens of thousands of them a
  // second never crowd the queue of snapshots waiting to be unwound.
  std::map<pid_t, ThreadSample> reused_;
  uint64_t dropped_creations_ = 0;  // of the queue's drops, the creations

  // Worker-owned until finish().
  StackTable stacks_;
  std::map<std::string, ProfileData> profiles_;
  std::map<pid_t, StackId> last_stack_;
  size_t creations_detailed_ = 0;  // creations with a row of their own (<= the detail cap)
  CollectorStats stats_;
  mutable std::mutex hot_mu_;
  std::map<std::pair<uint32_t, uint64_t>, uint64_t> leaf_cpu_;  // guarded by hot_mu_
  // Last: its worker runs process() on the members above, so it stops before they go.
  BoundedWorker<Item, std::unique_ptr<Unwinder>> queue_;
};

}  // namespace profctl
