// SPDX-License-Identifier: MIT
#include "profile/heap_profile.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>

#include "base/saturating.h"

namespace profctl {
namespace {

// The journal never shrinks below this, so that a short burst of frees after the peak does
// not materialize the peak state again and again.
constexpr size_t kMinJournal = 1 << 16;

// The per-stack totals of a set of (bucket, count) in one pass.
struct StackSums {
  int64_t objects = 0, bytes = 0, raw_objects = 0, raw_bytes = 0;
  void add(uint64_t count, uint64_t size, uint64_t rate) {
    const int64_t raw_bytes_here = sat_mul_nonneg(count, size);
    auto [o, b] = scale_heap_sample(sat_i64(count), raw_bytes_here, rate);
    objects = sat_add(objects, o);
    bytes = sat_add(bytes, b);
    raw_objects = sat_add(raw_objects, sat_i64(count));
    raw_bytes = sat_add(raw_bytes, raw_bytes_here);
  }
};

bool larger_first(const HeapStackUse& a, const HeapStackUse& b) {
  if (a.bytes != b.bytes) {
    return a.bytes > b.bytes;
  }
  return a.stack < b.stack;
}

}  // namespace

std::pair<int64_t, int64_t> scale_heap_sample(int64_t count, int64_t bytes, uint64_t rate) {
  if (count <= 0) {
    return {0, 0};
  }
  if (rate <= 1 || bytes <= 0) {
    return {count, std::max<int64_t>(bytes, 0)};
  }
  const double avg = static_cast<double>(bytes) / static_cast<double>(count);
  // Go's expression exactly (not -expm1, which is more precise for tiny sizes): the numbers
  // must be bit for bit those that Go and pprof's legacy-format parser compute.
  const double scale = 1 / (1 - std::exp(-avg / static_cast<double>(rate)));
  return {sat_trunc(static_cast<double>(count) * scale),
          sat_trunc(static_cast<double>(bytes) * scale)};
}

// splitmix64's finalizer over both fields: sizes are small multiples of 8 and stack ids are
// dense, so the raw bits would cluster.
size_t HeapTracker::BucketKeyHash::operator()(const BucketKey& k) const {
  uint64_t x = k.size ^ (static_cast<uint64_t>(k.stack) * 0x9e3779b97f4a7c15ULL) ^
               (static_cast<uint64_t>(k.pid) << 40) ^ (static_cast<uint64_t>(k.space) << 20);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return static_cast<size_t>(x ^ (x >> 31));
}

// Allocator pointers are 16-byte aligned and clustered: the finalizer spreads them over
// the table's low bits (robin_map sizes are powers of two).
size_t HeapTracker::PointerHash::operator()(uint64_t x) const {
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return static_cast<size_t>(x ^ (x >> 31));
}

HeapTracker::HeapTracker(uint64_t mem_rate, HeapTrackerLimits limits)
    : rate_(mem_rate == 0 ? 1 : mem_rate), limits_(limits) {}

void HeapTracker::set_start(uint64_t time_ns) { start_ns_ = time_ns; }

uint32_t HeapTracker::bucket_for(StackId stack, uint64_t size, pid_t pid, uint32_t space) {
  auto [it, added] = bucket_index_.try_emplace(BucketKey{stack, size, pid, space},
                                               static_cast<uint32_t>(buckets_.size()));
  if (added) {
    buckets_.push_back(Bucket{stack, size, estimate(size), 0, 0, pid, space});
  }
  return it->second;
}

// One allocation's scaled bytes, rounded: the unit of the running in-use total.
int64_t HeapTracker::estimate(uint64_t size) const {
  return scale_heap_sample(1, sat_i64(size), rate_).second;
}

void HeapTracker::on_alloc(uint64_t ptr, uint64_t size, StackId stack, uint64_t time_ns, pid_t tid,
                           pid_t pid, uint32_t space) {
  if (ptr == 0) {
    return;
  }
  auto it = live_.find(ptr);
  if ((it == live_.end() && live_.size() >= limits_.max_live) ||
      (buckets_.size() >= limits_.max_buckets &&
       bucket_index_.find(BucketKey{stack, size, pid, space}) == bucket_index_.end())) {
    counters_.capped = sat_add(counters_.capped, uint64_t{1});
    return;
  }
  if (!start_ns_) {
    start_ns_ = time_ns;
  }
  counters_.sampled_allocs = sat_add(counters_.sampled_allocs, uint64_t{1});
  if (it != live_.end()) {
    // The allocator handed out a pointer we still think live: its free was lost.
    counters_.missed_frees = sat_add(counters_.missed_frees, uint64_t{1});
    release(it->second.bucket, time_ns);
    live_.erase(it);
  }
  const uint32_t b = bucket_for(stack, size, pid, space);
  buckets_[b].allocs = sat_add(buckets_[b].allocs, uint64_t{1});
  live_.emplace(ptr, Live{time_ns, b, tid});
  inuse_estimate_ = sat_add(inuse_estimate_, buckets_[b].estimate);
  changed(b, +1, time_ns);
}

void HeapTracker::on_free(uint64_t ptr, uint64_t time_ns) {
  auto it = live_.find(ptr);
  if (it == live_.end()) {
    counters_.unknown_frees = sat_add(counters_.unknown_frees, uint64_t{1});
    return;
  }
  counters_.sampled_frees = sat_add(counters_.sampled_frees, uint64_t{1});
  release(it->second.bucket, time_ns);
  live_.erase(it);
}

void HeapTracker::release(uint32_t b, uint64_t time_ns) {
  buckets_[b].frees = sat_add(buckets_[b].frees, uint64_t{1});
  inuse_estimate_ = sat_sub(inuse_estimate_, buckets_[b].estimate);
  changed(b, -1, time_ns);
}

void HeapTracker::changed(uint32_t b, int32_t delta, uint64_t time_ns) {
  if (inuse_estimate_ > peak_estimate_) {
    // The peak is now: its state is the current state, nothing to copy.
    peak_estimate_ = inuse_estimate_;
    peak_time_ns_ = time_ns;
    journal_.clear();
    peak_counts_.clear();
    journaling_ = true;
    return;
  }
  if (!journaling_) {
    return;  // the peak state is materialized and stays as it is
  }
  journal_.push_back(Change{b, delta});
  if (journal_.size() > std::max(kMinJournal, 2 * buckets_.size())) {
    peak_counts_ = live_counts_at_peak();
    journal_.clear();
    journal_.shrink_to_fit();
    journaling_ = false;
  }
}

std::vector<std::pair<uint32_t, uint64_t>> HeapTracker::live_counts_at_peak() const {
  if (!journaling_) {
    return peak_counts_;
  }
  std::vector<int64_t> live(buckets_.size());
  for (size_t i = 0; i < buckets_.size(); ++i) {
    live[i] = static_cast<int64_t>(buckets_[i].allocs - buckets_[i].frees);
  }
  for (const Change& c : journal_) {
    live[c.bucket] -= c.delta;  // undo, newest last: order does not matter for sums
  }
  std::vector<std::pair<uint32_t, uint64_t>> out;
  for (size_t i = 0; i < live.size(); ++i) {
    if (live[i] > 0) {
      out.emplace_back(static_cast<uint32_t>(i), static_cast<uint64_t>(live[i]));
    }
  }
  return out;
}

HeapStackSet HeapTracker::stack_set(
    const std::vector<std::pair<uint32_t, uint64_t>>& counts) const {
  std::map<std::pair<StackId, uint32_t>, StackSums> per_stack;
  for (const auto& [b, n] : counts) {
    per_stack[{buckets_[b].stack, buckets_[b].space}].add(n, buckets_[b].size, rate_);
  }
  HeapStackSet set;
  for (const auto& [key, s] : per_stack) {
    HeapStackUse use{key.first, s.objects, s.bytes, s.raw_objects, s.raw_bytes};
    use.space = key.second;
    set.stacks.push_back(use);
    set.objects = sat_add(set.objects, s.objects);
    set.bytes = sat_add(set.bytes, s.bytes);
    set.raw_objects = sat_add(set.raw_objects, s.raw_objects);
    set.raw_bytes = sat_add(set.raw_bytes, s.raw_bytes);
  }
  std::sort(set.stacks.begin(), set.stacks.end(), larger_first);
  return set;
}

void HeapTracker::note_dropped(uint64_t n) {
  counters_.ring_dropped = sat_add(counters_.ring_dropped, n);
}

void HeapTracker::note_queue_dropped(uint64_t n) {
  counters_.queue_dropped = sat_add(counters_.queue_dropped, n);
}

void HeapTracker::note_frees_dropped(uint64_t n) {
  counters_.frees_dropped = sat_add(counters_.frees_dropped, n);
}

void HeapTracker::note_table_dropped(uint64_t n) {
  counters_.table_dropped = sat_add(counters_.table_dropped, n);
}

HeapResult HeapTracker::result(uint64_t end_ns, uint64_t leak_age_ns) const {
  const std::vector<ValueType> types = {{"alloc_objects", "count"},
                                        {"alloc_space", "bytes"},
                                        {"inuse_objects", "count"},
                                        {"inuse_space", "bytes"}};
  const ValueType period_type{"space", "bytes"};
  HeapResult r{ProfileData(types, period_type, sat_i64(rate_)),
               ProfileData(types, period_type, sat_i64(rate_)),
               {},
               {},
               counters_};
  r.counters.live_at_end = live_.size();
  r.profile.default_type = r.raw.default_type = "inuse_space";
  r.profile.dropped = r.raw.dropped =
      sat_add(sat_add(counters_.ring_dropped, counters_.queue_dropped), counters_.capped);

  // The profile: one row per stack (and process, when several are followed), each bucket
  // (one size) scaled on its own as Go does.
  struct Row {
    StackSums alloc, inuse;
  };
  std::map<std::tuple<StackId, pid_t, uint32_t>, Row> rows;
  for (const Bucket& b : buckets_) {
    Row& row = rows[{b.stack, b.pid, b.space}];
    row.alloc.add(b.allocs, b.size, rate_);
    row.inuse.add(b.allocs - b.frees, b.size, rate_);
  }
  for (const auto& [key, row] : rows) {
    const auto& [stack, pid, space] = key;
    std::map<std::string, std::string> labels;
    if (pid != 0) {
      labels["pid"] = std::to_string(pid);
      auto n = process_names_.find(pid);
      labels["comm"] = n != process_names_.end() ? n->second : std::string();
    }
    r.profile.add(stack, labels,
                  {row.alloc.objects, row.alloc.bytes, row.inuse.objects, row.inuse.bytes}, space);
    r.raw.add(
        stack, labels,
        {row.alloc.raw_objects, row.alloc.raw_bytes, row.inuse.raw_objects, row.inuse.raw_bytes},
        space);
  }

  static_cast<HeapStackSet&>(r.peak) = stack_set(live_counts_at_peak());
  const uint64_t start = start_ns_.value_or(peak_time_ns_);
  r.peak.at_ns = peak_time_ns_ > start ? peak_time_ns_ - start : 0;

  // Long-lived: live at the end and at least leak_age_ns old, per bucket, then per stack.
  struct Oldest {
    uint64_t count = 0;
    uint64_t time_ns = UINT64_MAX;
    pid_t tid = 0;
  };
  std::map<uint32_t, Oldest> old;
  for (const auto& [ptr, l] : live_) {
    const uint64_t age = end_ns > l.time_ns ? end_ns - l.time_ns : 0;
    if (age < leak_age_ns) {
      continue;
    }
    Oldest& o = old[l.bucket];
    ++o.count;
    // Ties on time: the lowest tid, so that the result does not depend on hash order.
    if (l.time_ns < o.time_ns || (l.time_ns == o.time_ns && l.tid < o.tid)) {
      o.time_ns = l.time_ns;
      o.tid = l.tid;
    }
  }
  std::vector<std::pair<uint32_t, uint64_t>> old_counts;
  std::map<std::pair<StackId, uint32_t>, Oldest> oldest_per_stack;
  for (const auto& [b, o] : old) {
    old_counts.emplace_back(b, o.count);
    Oldest& s = oldest_per_stack[{buckets_[b].stack, buckets_[b].space}];
    if (o.time_ns < s.time_ns || (o.time_ns == s.time_ns && o.tid < s.tid)) {
      s = o;
    }
  }
  static_cast<HeapStackSet&>(r.leaks) = stack_set(old_counts);
  r.leaks.min_age_ns = leak_age_ns;
  for (HeapStackUse& s : r.leaks.stacks) {
    const Oldest& o = oldest_per_stack[{s.stack, s.space}];
    s.oldest_age_ns = end_ns > o.time_ns ? end_ns - o.time_ns : 0;
    s.oldest_tid = o.tid;
  }
  return r;
}

std::optional<StackId> HeapTracker::allocation_stack(uint64_t address) const {
  for (const auto& [ptr, live] : live_) {
    const Bucket& b = buckets_[live.bucket];
    if (address >= ptr && address - ptr < b.size) {
      return b.stack;
    }
  }
  return std::nullopt;
}

}  // namespace profctl
