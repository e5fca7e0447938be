// SPDX-License-Identifier: MIT
// HeapTracker: the heap profile (Go's runtime.MemProfile, as `go tool pprof` shows it) built
// from the sampled allocations that the in-target probes record, plus what Go does not
// give: the peak of in-use memory with the stacks that held it, and long-lived allocations
// (leak candidates).
//
// Sampling is decided in the target with Go's MemProfileRate semantics: a Poisson process
// over allocated bytes with mean `mem_rate` bytes between samples (1 = every allocation).
// An allocation of s bytes is therefore sampled with probability 1 - exp(-s/rate), and the
// tracker reports two sets of numbers:
//  - raw: the sampled allocations themselves (what Go's debug=1 text profile prints);
//  - scaled: estimates of the whole program's allocations, each sampled allocation of size
//    s standing for 1/(1 - exp(-s/rate)) allocations (Go's scaleHeapSample,
//    src/runtime/pprof/protomem.go; what pprof shows).
// Only sampled pointers produce free records, so the frees of memory allocated before the
// attach are never seen; a free of a pointer the tracker does not know is counted, never
// charged to any stack.
//
// Memory: the live sampled-pointer map is the only per-allocation state. Everything else is
// per (stack, size) bucket, as Go keeps its buckets, plus a bounded journal for the peak.
// Not thread-safe: one thread (the one that drains the ring) calls it.
#pragma once

#include <sys/types.h>
#include <tsl/robin_map.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "profile/profile_data.h"
#include "profile/stack_table.h"

namespace profctl {

inline constexpr uint64_t kDefaultMemRate = 512 * 1024;  // Go's MemProfileRate
// 10 s: memory that a request or a batch holds for milliseconds to seconds drops out, and a
// capture of the usual 30 s still leaves two thirds of its length for candidates to appear.
inline constexpr uint64_t kDefaultLeakAgeNs = 10'000'000'000;

// Go's scaleHeapSample: (count, bytes) of sampled allocations of one size -> estimated
// (count, bytes) of all allocations. rate <= 1 means every allocation was recorded (no
// scaling). Go returns (0, 0) for zero bytes; a zero-byte allocation cannot be drawn by a
// sampler that counts bytes unless rate is 1, so here it keeps its count instead of
// vanishing. Results saturate at INT64_MAX.
std::pair<int64_t, int64_t> scale_heap_sample(int64_t count, int64_t bytes, uint64_t rate);

struct HeapCounters {
  uint64_t sampled_allocs = 0;  // on_alloc calls (sampled allocations, reallocs included)
  uint64_t sampled_frees = 0;   // frees of live sampled pointers (charged)
  // Frees of pointers not in the live map, never charged: allocated before the attach, or
  // not sampled, or their allocation record was dropped.
  uint64_t unknown_frees = 0;
  // An allocation returned a pointer that was still live here: its free record was lost
  // (ring full). The old allocation is taken as freed at that moment.
  uint64_t missed_frees = 0;
  uint64_t live_at_end = 0;  // sampled pointers still live when the result was taken
  // Allocation records lost (the heap profile's loss, as every output states it):
  uint64_t ring_dropped = 0;   // the ring was full (note_dropped)
  uint64_t queue_dropped = 0;  // read but not processed: the queue to the unwinding worker
                               // was full (note_queue_dropped)
  // Free records lost the same ways (note_frees_dropped): those allocations stay in use.
  uint64_t frees_dropped = 0;
  uint64_t table_dropped = 0;  // sampled allocations the target's pointer table had no room
                               // for: their frees are never seen (note_table_dropped)
  // Sampled allocations not counted at all because a bound of HeapTrackerLimits was reached
  // (a later free of one is an unknown free).
  uint64_t capped = 0;
};

// Bounds on what the tracker keeps, whatever the records say (they come from memory the
// target can write): live sampled pointers and (stack, size) buckets. Past either bound a
// new allocation is dropped and counted (HeapCounters::capped).
struct HeapTrackerLimits {
  // The target's own pointer table holds at most 2^22 sampled pointers by default; more
  // live ones than that can only come from untracked allocations whose frees are lost.
  size_t max_live = size_t{1} << 22;
  size_t max_buckets = size_t{1} << 20;
};

// One stack's share of the peak or of the long-lived allocations.
struct HeapStackUse {
  StackId stack = 0;
  int64_t objects = 0;         // scaled estimate
  int64_t bytes = 0;           // scaled estimate
  int64_t raw_objects = 0;     // sampled allocations
  int64_t raw_bytes = 0;       // their bytes
  uint64_t oldest_age_ns = 0;  // long-lived only: age of the oldest allocation at the end
  pid_t oldest_tid = 0;        // long-lived only: the thread that made it
  uint32_t space = 0;          // the image the stack's pcs belong to (0: the target's)
};

// Totals and stacks, largest scaled bytes first.
struct HeapStackSet {
  int64_t objects = 0, bytes = 0, raw_objects = 0, raw_bytes = 0;
  std::vector<HeapStackUse> stacks;
};

struct HeapPeak : HeapStackSet {
  uint64_t at_ns = 0;  // when, since the start (set_start, else the first record)
};

struct HeapLeaks : HeapStackSet {
  uint64_t min_age_ns = 0;  // allocations at least this old at the end are listed
};

struct HeapResult {
  // Go's four sample types in Go's order, scaled: alloc_objects/count, alloc_space/bytes,
  // inuse_objects/count, inuse_space/bytes; one row per stack (by StackId), no labels;
  // period_type space/bytes, period mem_rate, default_type inuse_space, dropped = the
  // allocations lost: ring, queue and capped (untracked pointers and lost frees are counted
  // apart: they were recorded, their frees are what is missing).
  ProfileData profile;
  ProfileData raw;  // the same rows in the same order, unscaled (sampled counts and bytes)
  HeapPeak peak;
  HeapLeaks leaks;
  HeapCounters counters;
};

class HeapTracker {
 public:
  // mem_rate: the rate the target samples with (--mem-rate); 0 is taken as 1.
  explicit HeapTracker(uint64_t mem_rate, HeapTrackerLimits limits = {});

  // The capture's start on the records' clock (every time_ns here is on the one clock the
  // ring records carry); the peak's time is given from it. Without it, from the first
  // record.
  void set_start(uint64_t time_ns);

  // A sampled allocation of `size` bytes at `ptr` (target address) made on `stack` by
  // thread `tid`. A realloc arrives as on_free(old) then on_alloc(new). A null ptr (a
  // failed allocation) is ignored.
  // `pid`: the process, when a capture follows several (its rows are labelled pid and
  // comm, see name_process); 0 when it does not. Pointers of different processes must
  // differ (the caller tags them).
  void on_alloc(uint64_t ptr, uint64_t size, StackId stack, uint64_t time_ns, pid_t tid,
                pid_t pid = 0, uint32_t space = 0);
  // The comm label of process `pid`'s rows.
  void name_process(pid_t pid, std::string comm) { process_names_[pid] = std::move(comm); }
  // A free of a pointer the target sampled; unknown pointers are counted, not charged.
  void on_free(uint64_t ptr, uint64_t time_ns);

  void note_dropped(uint64_t n);        // allocation records lost (ring full)
  void note_queue_dropped(uint64_t n);  // allocations dropped before unwinding (queue full)
  void note_frees_dropped(uint64_t n);  // free records lost (ring or queue full)
  void note_table_dropped(uint64_t n);  // sampled allocations the target could not track

  // The profile at `end_ns` (same clock as the records); allocations live at the end and at
  // least `leak_age_ns` old are the long-lived candidates. Can be called more than once.
  HeapResult result(uint64_t end_ns, uint64_t leak_age_ns = kDefaultLeakAgeNs) const;

  // So far (live_at_end is not filled in: see live_pointers()); for a status line.
  const HeapCounters& counters() const { return counters_; }
  uint64_t mem_rate() const { return rate_; }
  size_t live_pointers() const { return live_.size(); }
  // The stack of the live sampled allocation that holds `address`, if any (a lock inside a
  // heap object: the mutex profile says where the object came from).
  std::optional<StackId> allocation_stack(uint64_t address) const;
  size_t buckets() const { return buckets_.size(); }

 private:
  // Go's bucket: one stack and one allocation size, so that scaling is exact per size.
  struct Bucket {
    StackId stack = 0;
    uint64_t size = 0;
    int64_t estimate = 0;  // one allocation's scaled bytes (exp() once per bucket, not per record)
    uint64_t allocs = 0;
    uint64_t frees = 0;
    pid_t pid = 0;
    uint32_t space = 0;  // the image the stack's pcs belong to (0: the target's)
  };
  struct BucketKey {
    StackId stack;
    uint64_t size;
    pid_t pid;
    uint32_t space;
    bool operator==(const BucketKey&) const = default;
  };
  struct BucketKeyHash {
    size_t operator()(const BucketKey& k) const;
  };
  struct PointerHash {
    size_t operator()(uint64_t ptr) const;
  };
  struct Live {
    uint64_t time_ns;
    uint32_t bucket;
    pid_t tid;
  };
  // A change of one bucket's live count after the peak, kept to rebuild the peak state.
  struct Change {
    uint32_t bucket;
    int32_t delta;
  };

  uint32_t bucket_for(StackId stack, uint64_t size, pid_t pid, uint32_t space);
  int64_t estimate(uint64_t size) const;
  void changed(uint32_t bucket, int32_t delta, uint64_t time_ns);
  void release(uint32_t bucket, uint64_t time_ns);
  std::vector<std::pair<uint32_t, uint64_t>> live_counts_at_peak() const;
  HeapStackSet stack_set(const std::vector<std::pair<uint32_t, uint64_t>>& counts) const;

  uint64_t rate_;
  HeapTrackerLimits limits_;
  std::optional<uint64_t> start_ns_;
  std::vector<Bucket> buckets_;
  // Open addressing (robin hood): at --mem-rate 1 every call of the target comes through
  // here, and a node-based map's malloc and free per live pointer were a third of the heap
  // worker's time.
  tsl::robin_map<BucketKey, uint32_t, BucketKeyHash> bucket_index_;
  tsl::robin_map<uint64_t, Live, PointerHash> live_;  // target pointer -> its allocation
  std::map<pid_t, std::string> process_names_;
  HeapCounters counters_;

  // The peak. The running total is the sum of per-allocation estimates (integers, so that
  // frees subtract exactly); a new maximum marks "the peak is now". The state at that
  // moment is the current state minus the changes made since, which are journaled; when the
  // journal outgrows its bound, the peak state is materialized once and the journal stops
  // until the next new maximum. Exact peak stacks for amortized O(1) per record and memory
  // bounded by max(kMinJournal, 2 x buckets).
  int64_t inuse_estimate_ = 0;
  int64_t peak_estimate_ = 0;
  uint64_t peak_time_ns_ = 0;
  std::vector<Change> journal_;
  bool journaling_ = false;  // the peak is current state minus journal_
  std::vector<std::pair<uint32_t, uint64_t>> peak_counts_;  // materialized (bucket, live)
};

}  // namespace profctl
