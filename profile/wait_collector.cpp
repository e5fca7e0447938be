// SPDX-License-Identifier: MIT
#include "profile/wait_collector.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <tuple>

#include "base/saturating.h"

namespace profctl {

std::pair<double, double> scale_block_event(uint64_t delay_ns, uint64_t rate_ns) {
  if (rate_ns > 1 && delay_ns < rate_ns) {
    const double d = delay_ns == 0 ? 1.0 : static_cast<double>(delay_ns);
    return {static_cast<double>(rate_ns) / d, static_cast<double>(rate_ns)};
  }
  return {1.0, static_cast<double>(delay_ns)};
}

size_t WaitCollector::stack_bytes_of(const WaitEvent& e) {
  return e.snap ? e.snap->stack_size : (e.walked ? e.walked->pcs.size() * 8 : 0);
}

namespace {
ProfileData wait_profile(uint64_t period) {
  return ProfileData({{"contentions", "count"}, {"delay", "nanoseconds"}}, {"contentions", "count"},
                     static_cast<int64_t>(period));
}
}  // namespace

WaitCollector::WaitCollector(UnwinderFactory factory, std::function<bool(uint64_t)> is_lock_frame,
                             uint64_t block_rate_ns, uint64_t mutex_fraction, WaitLimits limits)
    : is_lock_frame_(std::move(is_lock_frame)),
      block_rate_ns_(block_rate_ns),
      mutex_fraction_(mutex_fraction),
      limits_(limits),
      holders_(wait_profile(mutex_fraction)),
      stacks_(limits.max_stack_frames),
      block_(wait_profile(block_rate_ns)),
      mutex_(wait_profile(mutex_fraction)),
      queue_({limits.max_queued, limits.max_queued_bytes}, &stack_bytes_of, std::move(factory),
             [this](std::unique_ptr<Unwinder>& u, WaitEvent& e) { process(u.get(), e); }) {}

WaitCollector::~WaitCollector() { finish(); }

bool WaitCollector::push(WaitEvent&& e) {
  // As the ring counts its drops (probe_counters): a lock wait chosen for mutex is the mutex
  // profile's loss; a generic wait that turns out to be an rwlock's is known only unwound.
  const bool block = e.block;
  const bool mutex = e.mutex && e.lock_wait;
  if (queue_.try_push(std::move(e))) {
    return true;
  }
  block_refused_ += block ? 1 : 0;
  mutex_refused_ += mutex ? 1 : 0;
  return false;
}

void WaitCollector::push_all(std::vector<WaitEvent>& batch, bool wait,
                             const std::function<void()>& idle) {
  queue_.push_all(batch, wait, idle, [this](const WaitEvent& e) {
    block_refused_ += e.block ? 1 : 0;
    mutex_refused_ += e.mutex && e.lock_wait ? 1 : 0;
  });
}

std::vector<std::string> WaitCollector::notes() const {
  std::vector<std::string> out;
  if (stats_.capped > 0) {
    out.push_back(std::to_string(stats_.capped) +
                  " waits were not counted: the block/mutex profiles reached their bound of " +
                  std::to_string(limits_.max_keys) + " (stack, lock) rows or " +
                  std::to_string(limits_.max_timed) + " timed waits");
  }
  if (const uint64_t n = stacks_.capped(); n > 0) {
    out.push_back(std::to_string(n) +
                  " wait stacks were not kept (shown as empty): the "
                  "block/mutex profiles reached their bound of " +
                  std::to_string(limits_.max_stack_frames) + " frames of unique stacks");
  }
  return out;
}

void WaitCollector::finish() {
  if (!queue_.finish()) {
    return;
  }
  const auto q = queue_.stats();
  stats_.dropped = q.dropped;
  stats_.block_dropped = block_refused_;
  stats_.mutex_dropped = mutex_refused_;
  stats_.max_queued_bytes = q.max_bytes;
  build();
}

void WaitCollector::process(Unwinder* unwinder, WaitEvent& e) {
  std::vector<UnwoundFrame> frames;
  StackId stack = 0;
  if (e.walked) {
    stack = walked_.resolve(stacks_, *e.walked);
    frames = stacks_.get(stack);
  } else {
    if (e.snap) {
      UnwindResult r = unwinder->unwind(*e.snap);
      ++stats_.unwound;
      stats_.truncated += r.truncated ? 1 : 0;
      frames = std::move(r.frames);
    }
    stack = stacks_.intern(frames);
  }
  const bool lock_wait = is_lock_wait(e, frames);
  const Key key{stack, e.lock};
  if (e.wake) {
    record_wake(e, key.first);
  } else {
    record_wait(e, key, lock_wait);
  }
}

bool WaitCollector::is_lock_wait(const WaitEvent& e,
                                 const std::vector<UnwoundFrame>& frames) const {
  if (e.lock_wait || !is_lock_frame_) {
    return e.lock_wait;
  }
  return std::any_of(frames.begin(), frames.end(),
                     [&](const UnwoundFrame& f) { return is_lock_frame_(f.pc); });
}

void WaitCollector::record_wake(const WaitEvent& e, StackId stack) {
  if (wakes_.size() >= limits_.max_timed) {
    ++stats_.capped;
    return;
  }
  wakes_.push_back({e.start_ns, e.lock, 0, stack});
  ++stats_.wakes;
}

void WaitCollector::record_wait(const WaitEvent& e, const Key& key, bool lock_wait) {
  // A row or a timed entry more than the bounds allow is not counted (the locks and
  // stacks come from the target's records: each could be new).
  auto room = [&](const std::map<Key, Acc>& acc) {
    return acc.size() < limits_.max_keys || acc.count(key) > 0;
  };
  const bool block = e.block;
  const bool mutex = e.mutex && lock_wait;
  const bool timed = mutex && e.lock_wait;  // a mutex: its release is probed (rwlocks' not)
  if ((block && !room(block_acc_)) || (mutex && !room(mutex_acc_)) ||
      (timed && mutex_waits_.size() >= limits_.max_timed)) {
    ++stats_.capped;
    stats_.block_capped += block ? 1 : 0;
    stats_.mutex_capped += mutex ? 1 : 0;
    return;
  }
  if (block) {
    auto [count, delay] = scale_block_event(e.delay_ns, block_rate_ns_);
    Acc& a = block_acc_[key];
    a.space = e.snap ? e.snap->space : 0;
    a.count += count;
    a.delay_ns += delay;
    ++stats_.block_events;
  }
  if (mutex) {
    Acc& a = mutex_acc_[key];
    a.space = e.snap ? e.snap->space : 0;
    a.count += 1;
    a.delay_ns += static_cast<double>(e.delay_ns);
    ++stats_.mutex_events;
    if (timed) {
      mutex_waits_.push_back({e.end_ns, e.lock, e.delay_ns, key.first});
    }
  }
}

void WaitCollector::build() {
  auto put = [this](ProfileData& p, const std::map<Key, Acc>& acc, double scale) {
    constexpr uint64_t kAddressBits = (uint64_t{1} << 48) - 1;
    for (const auto& [key, a] : acc) {
      char lock[32];
      std::snprintf(lock, sizeof lock, "0x%llx",
                    static_cast<unsigned long long>(key.second & kAddressBits));
      std::map<std::string, std::string> labels{{"lock", lock}};
      if (auto it = processes_.find(key.second >> 48); it != processes_.end()) {
        labels["pid"] = std::to_string(it->second.first);
        labels["comm"] = it->second.second;
      }
      p.add(key.first, labels, {std::llround(a.count * scale), std::llround(a.delay_ns * scale)},
            a.space);
    }
  };
  // The holder side: each mutex wait goes to the latest release of its lock that began
  // before the wait ended (the unlock that handed the lock on). A wait with none before it
  // goes to the first release within kReleaseRaceNs after it: the probe sees a release at
  // its wake call, which comes after the unlock itself, and a waiter whose futex wait had
  // returned (a signal, one of profctl's own stops) takes the lock in between and is gone
  // before that release is stamped.
  constexpr uint64_t kReleaseRaceNs = 1'000'000;
  auto by_lock_time = [](const Timed& a, const Timed& b) {
    return std::tie(a.lock, a.at_ns) < std::tie(b.lock, b.at_ns);
  };
  std::sort(wakes_.begin(), wakes_.end(), by_lock_time);
  std::map<Key, Acc> holder_acc;
  for (const Timed& w : mutex_waits_) {
    auto it =
        std::upper_bound(wakes_.begin(), wakes_.end(), Timed{w.at_ns, w.lock, 0, 0}, by_lock_time);
    const Timed* by = nullptr;
    if (it != wakes_.begin() && (it - 1)->lock == w.lock) {
      by = &*(it - 1);
    } else if (it != wakes_.end() && it->lock == w.lock && it->at_ns - w.at_ns <= kReleaseRaceNs) {
      by = &*it;
    }
    if (by == nullptr) {
      ++stats_.unattributed;
      continue;
    }
    Acc& a = holder_acc[Key{by->stack, w.lock}];
    a.count += 1;
    a.delay_ns += static_cast<double>(w.delay_ns);
  }
  put(holders_, holder_acc, static_cast<double>(mutex_fraction_ == 0 ? 1 : mutex_fraction_));
  put(block_, block_acc_, 1.0);
  put(mutex_, mutex_acc_, static_cast<double>(mutex_fraction_ == 0 ? 1 : mutex_fraction_));
  // What the collector lost of each; capture/ adds the ring's (ProfileLoss). The holders'
  // side is charged from the mutex waits: it lost what they lost.
  block_.dropped = sat_add(stats_.block_dropped, stats_.block_capped);
  mutex_.dropped = sat_add(stats_.mutex_dropped, stats_.mutex_capped);
  holders_.dropped = mutex_.dropped;
}

}  // namespace profctl
