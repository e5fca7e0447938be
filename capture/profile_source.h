// SPDX-License-Identifier: MIT
// ProfileSource: one profile kind (cpu, wall, threadcreate, threads, heap, block, mutex)
// from end to end, in one file of capture/sources/: what it needs from the session and
// which of its events it consumes (`plan`), the options it records (`describe`), and what
// it adds to the Capture once the session is over (`add_to`: profiles, labels, warnings).
//
// The session's engines are shared, as async-profiler's are: the sampler (ticks, the CPU
// timer, clone events) feeding one Collector that unwinds each snapshot once for every
// kind that consumes it; the probes (one install, one ring) feeding the heap and wait
// collectors; the last stop of the world. The pipeline (capture_pipeline.h) starts an
// engine when a source's plan asks for it, runs the window, detaches and finishes the
// engines, in the one order ptrace allows; a source never owns a thread or a ptrace stop.
//
// Adding a kind: a file in capture/sources/ and its line in capture/source_registry.cpp.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "capture/probe_capture.h"
#include "profile/collector.h"

namespace profctl {

// The user's settings that sources read (validated by cli/).
struct CaptureSettings {
  double rate_hz = 99;      // ticks per second (cpu, wall)
  bool cpu_timer = true;    // cpu samples from each thread's CPU clock (attach/cpu_timer.h)
  bool cpu_records = true;  // and first from the kernel's sample records (attach/perf_sampler.h)
  int64_t mem_rate = 512 * 1024;           // heap: bytes between samples on average (1: every one)
  uint64_t leak_age_ns = 10'000'000'000;   // heap: live at the end and this old is long-lived
  uint32_t probe_stack_bytes = 16 * 1024;  // stack copied per probe record
  uint64_t probe_ring_bytes = probe::kDefaultRingBytes;  // the probes' ring
  bool probe_lossy = false;  // a full ring drops records (counted) instead of holding the writer
  uint64_t block_rate_ns = 10'000;  // block: waits this long always recorded
  uint64_t mutex_fraction = 1;      // mutex: 1 in N contended waits recorded
};

// What a capture's sources ask of the session: the union of every source's plan.
struct SessionPlan {
  bool ticks = false;        // sampling ticks at rate_hz
  bool cpu_timer = false;    // cpu samples from the threads' CPU clocks (else the ticks')
  bool cpu_records = false;  // those clocks' kernel sample records first (else their signals)
  // What the sample collector aggregates: the sampler's events a source consumes
  // (ticks' and CPU timer's samples, clone events).
  CollectorOptions collector;
  // The probes: which records a source consumes (allocations, block and mutex waits).
  ProbeCaptureOptions probes;
  bool any_probes() const { return probes.heap || probes.block || probes.mutex; }
};

class Assembly;

class ProfileSource {
 public:
  virtual ~ProfileSource() = default;
  // The kind's name: --profiles, capture.json's profile key, output file names.
  virtual std::string_view name() const = 0;
  // Sets what it needs of the session in `plan` (adds to it, never clears).
  virtual void plan(SessionPlan& plan, const CaptureSettings& s) const = 0;
  // The settings it records in the capture's header ("options").
  virtual void describe(std::map<std::string, std::string>& /*options*/,
                        const CaptureSettings& /*s*/) const {}
  // Adds its profiles (symbolized), labels and warnings from the finished session.
  virtual void add_to(Assembly& a) const = 0;
};

}  // namespace profctl
