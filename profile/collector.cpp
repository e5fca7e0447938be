#include "profile/collector.h"

#include <chrono>

namespace profctl {

Collector::Collector(UnwinderFactory factory, CollectorOptions opts) : opts_(std::move(opts)) {
  if (opts_.kinds.count("cpu")) {
    profiles_["cpu"] = ProfileData({{"samples", "count"}, {"cpu", "nanoseconds"}},
                                   {"cpu", "nanoseconds"}, opts_.period_ns);
  }
  if (opts_.kinds.count("wall")) {
    profiles_["wall"] = ProfileData({{"samples", "count"}, {"wall", "nanoseconds"}},
                                    {"wall", "nanoseconds"}, opts_.period_ns);
  }
  if (opts_.kinds.count("threadcreate")) {
    profiles_["threadcreate"] =
        ProfileData({{"threadcreate", "count"}}, {"threadcreate", "count"}, 1);
  }
  worker_ = std::thread([this, f = std::move(factory)] { worker_main(f); });
}

Collector::~Collector() { finish(); }

void Collector::push(Item&& item, bool droppable) {
  std::unique_lock lock(mu_);
  if (droppable && queue_.size() >= opts_.max_queued) {
    ++stats_.dropped;  // counted under mu_, reported at the end
    return;
  }
  queue_.push_back(std::move(item));
  stats_.max_queue = std::max(stats_.max_queue, queue_.size());
  lock.unlock();
  cv_.notify_one();
}

void Collector::flush_reused(pid_t tid) {
  auto it = reused_.find(tid);
  if (it != reused_.end()) {
    push(Item(std::move(it->second)), /*droppable=*/false);
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
  flush_reused(s.tid);  // they refer to the stack before this one
  push(Item(std::move(s)), /*droppable=*/true);
}

void Collector::on_thread_created(ThreadCreation&& c) {
  if (profiles_.count("threadcreate")) {
    push(Item(std::move(c)), /*droppable=*/false);  // exact counts: never dropped
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
    last_stack_[s.tid] = id;
  } else {
    auto it = last_stack_.find(s.tid);
    if (it == last_stack_.end()) {
      return;
    }
    id = it->second;
  }
  std::map<std::string, std::string> labels{{"tid", std::to_string(s.tid)},
                                            {"thread_name", s.name}};
  if (auto it = profiles_.find("cpu"); it != profiles_.end() && s.state == 'R') {
    it->second.add(id, labels, {static_cast<int64_t>(s.ticks), static_cast<int64_t>(s.cpu_ns)});
  }
  if (auto it = profiles_.find("wall"); it != profiles_.end()) {
    labels["state"] = state_word(s.state);
    it->second.add(id, labels, {static_cast<int64_t>(s.ticks), static_cast<int64_t>(s.wall_ns)});
  }
}

void Collector::process(Unwinder& u, ThreadCreation& c) {
  UnwindResult r = u.unwind(c.snap);
  ++stats_.unwound;
  StackId id = stacks_.intern(r.frames);
  profiles_["threadcreate"].add(id,
                                {{"tid", std::to_string(c.creator)},
                                 {"thread_name", c.creator_name},
                                 {"new_tid", std::to_string(c.child)}},
                                {1});
}

void Collector::worker_main(const UnwinderFactory& factory) {
  std::unique_ptr<Unwinder> u = factory();
  for (;;) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return done_ || !queue_.empty(); });
    if (queue_.empty()) {
      return;  // done_ and drained
    }
    Item item = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    if (!u) {
      continue;
    }
    auto t0 = std::chrono::steady_clock::now();
    std::visit([&](auto& x) { process(*u, x); }, item);
    stats_.unwind_s += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
}

void Collector::finish() {
  while (!reused_.empty()) {
    flush_reused(reused_.begin()->first);
  }
  {
    std::lock_guard lock(mu_);
    if (done_) {
      return;
    }
    done_ = true;
  }
  cv_.notify_one();
  if (worker_.joinable()) {
    worker_.join();
  }
  for (auto& [kind, p] : profiles_) {
    if (kind != "threadcreate") {
      p.dropped = stats_.dropped;
    }
  }
}

}  // namespace profctl
