// SPDX-License-Identifier: MIT
#include "attach/wait_queue.h"

#include <algorithm>

#include "base/log.h"

namespace profctl {

template <class Pred>
std::optional<Waiter::Event> WaitQueue::take_held(Pred&& pred) {
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    if (const Held* h = std::get_if<Held>(&*it); h != nullptr && pred(*h)) {
      Waiter::Event ev = h->status;
      entries_.erase(it);
      return ev;
    }
  }
  return std::nullopt;
}

void WaitQueue::hold(TracedProcess& owner, Waiter::Event ev) {
  if (ev.pending_in_kernel) {
    // Left in the kernel, it would be peeked again and again: reaped now, its signal is
    // the owner's to re-deliver (pending_signal) like any other.
    waiter_.consume(ev);
    ev.pending_in_kernel = false;
  }
  entries_.emplace_back(Held{&owner, ev});
}

std::optional<Waiter::Event> WaitQueue::next_status(const TracedProcess& self,
                                                    std::chrono::milliseconds timeout) {
  if (auto ev = take_held([&](const Held& h) { return h.owner == &self; })) {
    return ev;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    auto ev = waiter_.next(std::max(left, std::chrono::milliseconds(0)));
    if (!ev || router_ == nullptr) {
      return ev;
    }
    TracedProcess* owner = router_->owner_of(ev->tid);
    if (owner == &self) {
      return ev;
    }
    if (owner == nullptr) {
      router_->release_stray(*ev);
    } else {
      hold(*owner, *ev);
    }
    if (left.count() <= 0) {
      return std::nullopt;
    }
  }
}

std::optional<Waiter::Event> WaitQueue::next_status_of(pid_t tid,
                                                       std::chrono::milliseconds timeout) {
  if (auto ev = take_held([&](const Held& h) { return h.status.tid == tid; })) {
    return ev;
  }
  return waiter_.next_for(tid, timeout);
}

std::optional<WaitQueue::Entry> WaitQueue::next(std::chrono::nanoseconds timeout) {
  if (!entries_.empty()) {
    Entry e = std::move(entries_.front());
    entries_.pop_front();
    return e;
  }
  if (router_ == nullptr) {
    return std::nullopt;  // nobody to route a status to: it stays in the kernel
  }
  auto ev = waiter_.next(timeout);
  if (!ev) {
    return std::nullopt;
  }
  TracedProcess* owner = router_->owner_of(ev->tid);
  if (owner == nullptr) {
    router_->release_stray(*ev);
    return std::nullopt;
  }
  return Entry(Held{owner, *ev});
}

bool WaitQueue::holds_status_for(const TracedProcess& p) const {
  return std::any_of(entries_.begin(), entries_.end(), [&](const Entry& e) {
    const Held* h = std::get_if<Held>(&e);
    return h != nullptr && h->owner == &p;
  });
}

void WaitQueue::forget(const TracedProcess& p) {
  const size_t n = std::erase_if(entries_, [&](const Entry& e) {
    const Held* h = std::get_if<Held>(&e);
    return h != nullptr && h->owner == &p;
  });
  if (n > 0) {
    logger("attach")->debug("{} statuses held for a process that went away dropped", n);
  }
}

}  // namespace profctl
