// SPDX-License-Identifier: MIT
// TraceEvent: a high-level event of a traced process, what the sampling session serves
// between ticks. Everything else (stale interrupt stops, signals for the target, new
// threads' first stops) is handled where the status arrives (TracedProcess::handle_status).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>

#include "attach/snapshot.h"

namespace profctl {

struct TraceEvent {
  enum class Kind {
    kThreadCreated,
    kThreadExited,
    kProcessExited,
    kExec,
    kSignal,
    kSample,
    kProcessCreated,  // ProcessTree: a followed child process (`child`), created by `tid`
  };
  TraceEvent(Kind k, pid_t t, pid_t c = 0, int s = 0) : kind(k), tid(t), child(c), status(s) {}
  Kind kind;
  pid_t tid = 0;                    // the creating / exiting / exec'ing / signalled thread
  pid_t child = 0;                  // kThreadCreated: the new thread
  int status = 0;                   // kProcessExited: raw wait status; kSignal: the signal
  std::optional<Snapshot> creator;  // kThreadCreated: the creator, stopped at the clone
  std::optional<Snapshot> sample;   // kSample: the thread's snapshot
  uint64_t stop_ns = 0;  // kSample: from the request to the stop (mostly waiting for a CPU)
  uint64_t held_ns = 0;  // kSample: from the stop to the resume: what it cost the thread
  bool timer = false;    // kSample: taken at a stop by profctl's own CPU timer signal
  pid_t process = 0;     // ProcessTree: the process of the event (kProcessExited, kExec)
};

}  // namespace profctl
