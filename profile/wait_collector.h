// SPDX-License-Identifier: MIT
// WaitCollector: the block and mutex profiles' sink beside the Collector and the
// HeapCollector. Timed waits recorded by the probes (a stack copy at the wait function's
// entry, the delay, the lock or futex word) are queued by the thread that drains the probe
// ring and unwound on a worker of their own into two Go-style profiles:
//  - block: every futex wait the block rate chose (condition variables, semaphores, join,
//    barriers, rwlocks, and lock waits too, as Go counts them), scaled as Go's
//    saveblockevent does (a wait shorter than the rate counts rate/delay times, rate ns);
//  - mutex: contended lock acquisitions (1 in `fraction`, values scaled by the fraction as
//    Go's scaleMutexProfile does), charged to the waiter's stack.
// Values are contentions/count and delay/nanoseconds. Each row carries the lock address
// as its "lock" label. Memory is bounded whatever the records say (they come from memory
// the target can write): the queue in events and stack bytes, the (stack, lock) keys, the
// timed waits and releases kept for the holder side, and the stack table's frames
// (WaitLimits); past a bound, waits are dropped and counted.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "attach/snapshot.h"
#include "profile/bounded_worker.h"
#include "profile/profile_data.h"
#include "profile/stack_table.h"
#include "profile/walked_stacks.h"
#include "unwind/unwinder.h"

namespace profctl {

struct WaitEvent {
  bool mutex = false;      // chosen for the mutex profile
  bool block = false;      // chosen for the block profile
  bool lock_wait = false;  // a lock's slow path (else a generic futex wait)
  bool wake = false;       // a contended lock's release (the holder side), not a wait
  uint64_t start_ns = 0;   // CLOCK_MONOTONIC: the wait (or release) began
  uint64_t end_ns = 0;     // and ended
  uint64_t delay_ns = 0;
  uint64_t lock = 0;
  pid_t tid = 0;
  std::unique_ptr<Snapshot> snap;     // at the wait function's entry
  std::optional<WalkedStack> walked;  // the stack as the target walked it (no snap)
};

struct WaitCollectorStats {
  uint64_t unwound = 0;
  uint64_t dropped = 0;
  uint64_t truncated = 0;
  uint64_t block_events = 0;
  uint64_t mutex_events = 0;
  uint64_t wakes = 0;  // releases of contended locks recorded
  uint64_t unattributed =
      0;                // mutex waits with no recorded release before their end (or just after)
  uint64_t capped = 0;  // waits or releases not counted: a bound of WaitLimits reached
  // Each profile's share of the drops and caps above (a wait may be chosen for both):
  uint64_t block_dropped = 0;  // waits chosen for block that the full queue refused
  uint64_t mutex_dropped = 0;  // lock waits chosen for mutex that the full queue refused
  uint64_t block_capped = 0;
  uint64_t mutex_capped = 0;
  size_t max_queued_bytes = 0;  // the most stack bytes the queue held at once
};

struct WaitLimits {
  size_t max_queued = 1 << 16;                  // waits waiting to be unwound
  size_t max_queued_bytes = size_t{128} << 20;  // their stack copies, together
  size_t max_keys = size_t{1} << 20;            // (stack, lock) rows of block and of mutex
  size_t max_timed = size_t{1} << 21;           // mutex waits and releases kept (32 bytes each)
  size_t max_stack_frames = size_t{1} << 23;    // frames of all unique stacks (~256 MiB)
};

class WaitCollector {
 public:
  using UnwinderFactory = std::function<std::unique_ptr<Unwinder>()>;
  // is_lock_frame: true for a pc inside a lock operation whose generic futex wait is a
  // lock contention (pthread_rwlock_*): such a wait also goes to the mutex profile.
  WaitCollector(UnwinderFactory factory, std::function<bool(uint64_t pc)> is_lock_frame,
                uint64_t block_rate_ns, uint64_t mutex_fraction, WaitLimits limits = {});
  ~WaitCollector();
  WaitCollector(const WaitCollector&) = delete;
  WaitCollector& operator=(const WaitCollector&) = delete;

  // Queues a wait for the worker; false (counted) when the queue is full.
  bool push(WaitEvent&& e);
  // Queues a batch of events in order and clears it: wait, for room instead of dropping
  // (`idle` runs while it waits); else as push() for each.
  void push_all(std::vector<WaitEvent>& batch, bool wait, const std::function<void()>& idle);
  // Before finish(), when the capture follows child processes: a lock's address carries its
  // process's tag in bits 48-63 (0: the root), and rows are labelled with the pid and comm
  // these name (the lock label shows the address alone).
  void name_processes(std::map<uint64_t, std::pair<pid_t, std::string>> by_tag) {
    processes_ = std::move(by_tag);
  }
  void finish();
  // After finish(): lines for the capture's warnings about the bounds that were reached.
  std::vector<std::string> notes() const;

  // Final after finish(). Empty profiles when the kind was not requested.
  const ProfileData& block() const { return block_; }
  const ProfileData& mutex() const { return mutex_; }
  // Go's side of the mutex profile: each recorded contention's delay charged to the stack
  // that released the lock the waiter then took (the latest recorded release of that lock
  // that began before the wait ended). Empty when no release was recorded.
  const ProfileData& mutex_holders() const { return holders_; }
  const StackTable& stacks() const { return stacks_; }
  const WaitCollectorStats& stats() const { return stats_; }
  // Waits the full queue refused so far (any thread: the status line).
  uint64_t queue_dropped() const { return queue_.stats().dropped; }

 private:
  struct Acc {
    double count = 0;
    double delay_ns = 0;
    uint32_t space = 0;  // the address space of the stack (its process's image)
  };
  using Key = std::pair<StackId, uint64_t>;  // stack, lock
  static size_t stack_bytes_of(const WaitEvent& e);
  // On the worker: unwind, then count the event as a release or a wait.
  void process(Unwinder* unwinder, WaitEvent& e);
  bool is_lock_wait(const WaitEvent& e, const std::vector<UnwoundFrame>& frames) const;
  void record_wake(const WaitEvent& e, StackId stack);
  void record_wait(const WaitEvent& e, const Key& key, bool lock_wait);
  void build();

  std::function<bool(uint64_t)> is_lock_frame_;
  uint64_t block_rate_ns_;
  uint64_t mutex_fraction_;
  WaitLimits limits_;
  // Worker-owned until finish().
  struct Timed {
    uint64_t at_ns;  // a wait's end, a release's start
    uint64_t lock;
    uint64_t delay_ns;
    StackId stack;
  };
  std::map<Key, Acc> block_acc_;
  std::map<Key, Acc> mutex_acc_;
  std::map<uint64_t, std::pair<pid_t, std::string>> processes_;  // by tag (name_processes)
  std::vector<Timed> mutex_waits_;
  std::vector<Timed> wakes_;
  ProfileData holders_;
  StackTable stacks_;
  WalkedStacks walked_;
  ProfileData block_;
  ProfileData mutex_;
  WaitCollectorStats stats_;
  // The pushing thread's (the ring's drain): waits the full queue refused, by profile.
  uint64_t block_refused_ = 0;
  uint64_t mutex_refused_ = 0;
  // Last: its worker runs process() on the members above, so it stops before they go.
  BoundedWorker<WaitEvent, std::unique_ptr<Unwinder>> queue_;
};

// Go's scaling of one block event (runtime saveblockevent): a wait shorter than the rate
// was kept with probability delay/rate, so it stands for rate/delay waits of rate ns.
// Returns {count, delay_ns}.
std::pair<double, double> scale_block_event(uint64_t delay_ns, uint64_t rate_ns);

}  // namespace profctl
