// SPDX-License-Identifier: MIT
// WaitQueue: the one wait choke point of a capture, as rr's: the only Waiter, and the only
// queue of what came out of the kernel and was not handed out yet — statuses a wait took
// for another process than the waiting one (held for their owner, in order) and the
// sampling events (TraceEvent) ready for the session. No other place keeps a status.
//
// A TracedProcess owns it while it is alone (`stack`, `run` before and after the session);
// a ProcessTree takes it over for its lifetime, routes every status to the process owning
// the thread (Router), and gives it back. Its followed children use the tree's.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <deque>
#include <optional>
#include <variant>

#include "attach/trace_event.h"
#include "attach/waiter.h"

namespace profctl {

class TracedProcess;

class WaitQueue {
 public:
  // Which process a status is for; without one, every status is the waiting process's.
  class Router {
   public:
    // Null: a stray, a thread of no process of ours (released by release_stray).
    virtual TracedProcess* owner_of(pid_t tid) = 0;
    // Lets go of a stray's stop (with its signal, if it is a signal-delivery stop).
    virtual void release_stray(const Waiter::Event& ev) = 0;

   protected:
    ~Router() = default;
  };
  // A status taken from the kernel for `owner`, not handled yet.
  struct Held {
    TracedProcess* owner = nullptr;
    Waiter::Event status;
  };
  using Entry = std::variant<TraceEvent, Held>;

  void set_router(Router* r) { router_ = r; }

  // ---- a process's own waits (stopping its world, detaching, running to its entry) ----
  // The next status for `self`: one held for it first, then the kernel's. A status of
  // another process is held for its owner (reaped from the kernel: its signal, if any, is
  // the owner's to re-deliver), a stray's released. nullopt: nothing in `timeout`.
  std::optional<Waiter::Event> next_status(const TracedProcess& self,
                                           std::chrono::milliseconds timeout);
  // The next status of thread `tid` alone (a remote syscall's thread, a child process at
  // its first stop); other statuses stay where they are.
  std::optional<Waiter::Event> next_status_of(pid_t tid, std::chrono::milliseconds timeout);
  // Reaps a status left in the kernel (Waiter::consume).
  void consume(const Waiter::Event& e) { waiter_.consume(e); }
  // Sleeps a short while, not woken by each status unless `wake` (Waiter::nap); true when
  // one may have arrived meanwhile.
  bool nap(std::chrono::nanoseconds slice, bool wake = false) { return waiter_.nap(slice, wake); }

  // ---- the pump (ProcessTree::next_event) ----
  // The oldest entry, else the kernel's next status routed to its owner (a stray's is
  // released: nullopt). Needs a router.
  std::optional<Entry> next(std::chrono::nanoseconds timeout);
  void push_back(TraceEvent e) { entries_.emplace_back(std::move(e)); }
  void push_front(TraceEvent e) { entries_.emplace_front(std::move(e)); }

  // True while a status is held for `p`.
  bool holds_status_for(const TracedProcess& p) const;
  // `p` is going away: what is held for it goes too (it is detached or gone).
  void forget(const TracedProcess& p);

 private:
  void hold(TracedProcess& owner, Waiter::Event ev);
  template <class Pred>
  std::optional<Waiter::Event> take_held(Pred&& pred);

  Waiter waiter_;
  Router* router_ = nullptr;
  std::deque<Entry> entries_;
};

}  // namespace profctl
