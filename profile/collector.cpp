// SPDX-License-Identifier: MIT
#include "profile/collector.h"

#include <algorithm>
#include <chrono>

namespace profctl {

size_t Collector::stack_bytes_of(const Item& item) {
  if (const auto* s = std::get_if<ThreadSample>(&item)) {
    return s->snap ? s->snap->stack_size : 0;
  }
  return std::get<ThreadCreation>(item).snap.stack_size;
}

std::map<std::string, ProfileData> Collector::make_profiles(const CollectorOptions& opts) {
  std::map<std::string, ProfileData> profiles;
  if (opts.cpu) {
    profiles["cpu"] = ProfileData({{"samples", "count"}, {"cpu", "nanoseconds"}},
                                  {"cpu", "nanoseconds"}, opts.period_ns);
  }
  if (opts.wall) {
    profiles["wall"] = ProfileData({{"samples", "count"}, {"wall", "nanoseconds"}},
                                   {"wall", "nanoseconds"}, opts.period_ns);
  }
  if (opts.threadcreate) {
    profiles["threadcreate"] =
        ProfileData({{"threadcreate", "count"}}, {"threadcreate", "count"}, 1);
  }
  return profiles;
}

Collector::Collector(UnwinderFactory factory, CollectorOptions opts)
    : opts_(std::move(opts)),
      profiles_(make_profiles(opts_)),
      queue_({opts_.max_queued, opts_.max_queued_bytes}, &stack_bytes_of, std::move(factory),
             [this](std::unique_ptr<Unwinder>& u, Item& item) { handle(u, item); }) {}

Collector::~Collector() { finish(); }

void Collector::flush_reused(pid_t tid) {
  auto it = reused_.find(tid);
  if (it != reused_.end()) {
    queue_.push(Item(std::move(it->second)));
    reused_.erase(it);
  }
}

void Collector::on_sample(ThreadSample&& s) {
  bool wanted = profiles_.count("wall") || (profiles_.count("cpu") && s.state == 'R');
  if (!wanted && !s.snap) {
    return;
  }
  if (!s.snap) {
    // Same stack as the thread's last snapshot: merge with the thread's other such samples
    // (same name and state), in order.
    auto it = reused_.find(s.tid);
    if (it != reused_.end() && (it->second.state != s.state || it->second.name != s.name)) {
      flush_reused(s.tid);
      it = reused_.end();
    }
    if (it == reused_.end()) {
      reused_.emplace(s.tid, std::move(s));
    } else {
      it->second.ticks += s.ticks;
      it->second.wall_ns += s.wall_ns;
      it->second.cpu_ns += s.cpu_ns;
    }
    return;
  }
  flush_reused(s.tid);                  // they refer to the stack before this one
  queue_.try_push(Item(std::move(s)));  // a drop is counted by the queue, reported at the end
}

void Collector::on_thread_created(ThreadCreation&& c) {
  // Droppable too: at tens of thousands of creations a second a starved worker would
  // otherwise queue snapshots without bound. A dropped creation is counted and reported.
  if (profiles_.count("threadcreate") && !queue_.try_push(Item(std::move(c)))) {
    ++dropped_creations_;
  }
}

void Collector::on_thread_exited(pid_t tid) { flush_reused(tid); }

void Collector::process(Unwinder& u, ThreadSample& s) {
  StackId id;
  if (s.snap) {
    UnwindResult r = u.unwind(*s.snap);
    ++stats_.unwound;
    stats_.truncated += r.truncated ? 1 : 0;
    id = stacks_.intern(r.frames);
    if (s.for_wall) {
      last_stack_[s.tid] = id;  // a reused sample is the wall profile's: its last wall stack
    }
  } else {
    auto it = last_stack_.find(s.tid);
    if (it == last_stack_.end()) {
      return;
    }
    id = it->second;
  }
  std::map<std::string, std::string> labels{{"tid", std::to_string(s.tid)},
                                            {"thread_name", s.name}};
  if (opts_.process_labels && s.pid != 0) {
    labels["pid"] = std::to_string(s.pid);
    labels["comm"] = s.process;
  }
  const uint32_t space = s.snap ? s.snap->space : s.space;
  if (auto it = profiles_.find("cpu"); it != profiles_.end() && s.state == 'R' && s.for_cpu) {
    const int64_t count = s.from_clock ? 1 : static_cast<int64_t>(s.ticks);
    it->second.add(id, labels, {count, static_cast<int64_t>(s.cpu_ns)}, space);
    if (const auto& frames = stacks_.get(id); !frames.empty() && s.cpu_ns > 0) {
      std::lock_guard lock(hot_mu_);
      leaf_cpu_[{space, frames.front().pc}] += s.cpu_ns;
    }
  }
  if (auto it = profiles_.find("wall"); it != profiles_.end() && s.for_wall) {
    labels["state"] = state_word(s.state);
    it->second.add(id, labels, {static_cast<int64_t>(s.ticks), static_cast<int64_t>(s.wall_ns)},
                   space);
  }
}

std::vector<Collector::HotLeaf> Collector::hottest_leaves(size_t n) const {
  std::vector<HotLeaf> out;
  {
    std::lock_guard lock(hot_mu_);
    out.reserve(leaf_cpu_.size());
    for (const auto& [key, ns] : leaf_cpu_) {
      out.push_back({key.first, key.second, ns});
    }
  }
  const size_t keep = std::min(n, out.size());
  std::partial_sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(keep), out.end(),
                    [](const HotLeaf& a, const HotLeaf& b) { return a.cpu_ns > b.cpu_ns; });
  out.resize(keep);
  return out;
}

void Collector::process(Unwinder& u, ThreadCreation& c) {
  UnwindResult r = u.unwind(c.snap);
  ++stats_.unwound;
  stats_.truncated += r.truncated ? 1 : 0;
  const StackId id = stacks_.intern(r.frames);
  ProfileData& p = profiles_["threadcreate"];
  if (creations_detailed_ < opts_.threadcreate_detail_cap) {
    ++creations_detailed_;
    std::map<std::string, std::string> labels{{"tid", std::to_string(c.creator)},
                                              {"thread_name", c.creator_name},
                                              {"new_tid", std::to_string(c.child)}};
    if (opts_.process_labels && c.pid != 0) {
      labels["pid"] = std::to_string(c.pid);
      labels["comm"] = c.process;
    }
    p.add(id, labels, {1}, c.snap.space);
    return;
  }
  // Past the cap: the profile is counts per stack, one unlabelled row per stack.
  p.add(id, {}, {1}, c.snap.space);
  ++p.detail_omitted;
}

void Collector::handle(std::unique_ptr<Unwinder>& u, Item& item) {
  if (!u) {
    return;
  }
  auto t0 = std::chrono::steady_clock::now();
  std::visit([&](auto& x) { process(*u, x); }, item);
  stats_.unwind_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void Collector::finish() {
  while (!reused_.empty()) {
    flush_reused(reused_.begin()->first);
  }
  if (!queue_.finish()) {
    return;
  }
  const auto q = queue_.stats();
  stats_.dropped = q.dropped - dropped_creations_;
  stats_.dropped_creations = dropped_creations_;
  stats_.max_queue = q.max_items;
  for (auto& [kind, p] : profiles_) {
    p.dropped = kind == "threadcreate" ? stats_.dropped_creations : stats_.dropped;
  }
}

}  // namespace profctl
