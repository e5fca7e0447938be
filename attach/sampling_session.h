// SamplingSession: the attach/run capture loop. At every tick, a thread whose schedstat
// run time has not changed since its last sample is not stopped (its last stack stands);
// a thread that ran is stopped on its own, snapshotted and resumed at once. Between ticks
// it serves the target's events: clones (threadcreate), exits, exec, signals.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "attach/sample_sink.h"
#include "attach/traced_process.h"

namespace profctl {

struct SessionStatus {
  double elapsed_s = 0;
  uint64_t samples = 0;  // thread snapshots taken
  size_t threads = 0;
  uint64_t median_pause_ns = 0;
  uint64_t worst_pause_ns = 0;
};

struct SessionOptions {
  double rate_hz = 99;
  std::optional<std::chrono::nanoseconds> duration;  // nullopt: until stopped
  size_t stack_bytes = 8u << 20;
  bool sample = true;  // false: serve events only (threadcreate alone needs no ticks)
  std::function<void(const SessionStatus&)> on_status;  // called ~4 times a second
  // Called every 100 ms and at every thread creation, while the target is alive: the
  // moment to notice new mappings (libraries loaded after exec, dlopen).
  std::function<void()> on_maps_check;
};

struct SessionResult {
  enum class End { kDuration, kInterrupted, kTargetExited, kExec };
  End end = End::kDuration;
  int exit_status = 0;  // raw wait status when the target exited
  double elapsed_s = 0;
  uint64_t ticks = 0;
  uint64_t samples = 0;                     // threads stopped and snapshotted
  uint64_t reused = 0;                      // thread samples that needed no stop
  uint64_t signals = 0;                     // signals for the target seen and re-delivered
  uint64_t lost = 0;                        // threads that could not be stopped for a sample
  std::vector<uint64_t> pauses_ns;          // one per snapshot: stop to resume (the thread held)
  std::vector<uint64_t> stop_latencies_ns;  // one per snapshot: interrupt to stop
};

class SamplingSession {
 public:
  SamplingSession(TracedProcess& tp, SessionOptions opts, SampleSink& sink)
      : tp_(tp), opts_(std::move(opts)), sink_(sink) {}

  // Runs until the duration elapses, `stop` is set (by a signal handler), the target
  // exits or execs. The target stays seized; the caller detaches.
  SessionResult run(const std::atomic<bool>& stop);

 private:
  TracedProcess& tp_;
  SessionOptions opts_;
  SampleSink& sink_;
};

// Median and maximum of a set of durations (0 when empty).
std::pair<uint64_t, uint64_t> median_and_max(std::vector<uint64_t> v);

}  // namespace profctl
