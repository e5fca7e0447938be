// SPDX-License-Identifier: MIT
#include "capture/stage_notes.h"

#include <cstdio>

#include "base/log.h"

namespace profctl {
namespace {

std::string fmt_us(uint64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0fus", static_cast<double>(ns) / 1e3);
  return buf;
}

}  // namespace

std::vector<std::string> session_notes(const SessionResult& res, const SessionPlan& plan,
                                       const SessionNoteContext& ctx) {
  std::vector<std::string> out;
  if (res.lost > 0) {
    out.push_back(std::to_string(res.lost) +
                  " thread samples were lost: the thread did not stop in time");
  }
  if (plan.ticks && res.elapsed_s >= 1.0 && res.ticks < 0.8 * ctx.rate_hz * res.elapsed_s) {
    char buf[200];
    std::snprintf(buf, sizeof buf,
                  "sampled at %.1f Hz instead of %.0f Hz: the machine's CPUs were too busy for "
                  "the threads to reach their stops in time",
                  static_cast<double>(res.ticks) / res.elapsed_s, ctx.rate_hz);
    out.emplace_back(buf);
  }
  if (plan.collector.cpu && plan.cpu_records && res.cpu_source != "perf records") {
    out.push_back("cpu: the kernel's sample records were refused (" + res.perf_error +
                  "): cpu samples came from " + res.cpu_source +
                  ", which stop the thread at each sample (costlier)");
  } else if (plan.collector.wall && plan.cpu_records && res.cpu_source != "perf records") {
    out.push_back("wall: the kernel's sample records were refused (" + res.perf_error +
                  "): running threads were sampled from " + res.cpu_source +
                  ", which stop the thread at each sample (costlier)");
  } else if (plan.collector.cpu && !res.perf_error.empty()) {
    out.push_back("cpu: a thread created during the capture has no sample records (" +
                  res.perf_error + "): its CPU is missing from the cpu profile");
  }
  if (res.untracked > 0) {
    out.push_back(std::to_string(res.untracked) +
                  " threads were never sampled: their /proc files " + "would not open (" +
                  res.untracked_error +
                  "); raise the open-files limit (ulimit -n) and capture again");
  }
  if (res.perf_lost > 0) {
    out.push_back("cpu: " + std::to_string(res.perf_lost) +
                  " sample records were lost (the kernel's ring was full): the cpu profile "
                  "is short by that many samples");
  }
  if (res.end == SessionResult::End::kTargetExited) {
    out.emplace_back(ctx.launch ? "the program exited" : "the target exited during the capture");
  }
  if (ctx.launch && res.end == SessionResult::End::kInterrupted) {
    out.push_back(ctx.stop_signal + ": the program had not exited " +
                  std::to_string(ctx.stop_grace.count()) +
                  " ms later; the capture ended without it");
  }
  return out;
}

std::vector<std::string> collector_notes(const CollectorStats& cs) {
  std::vector<std::string> out;
  if (cs.dropped > 0) {
    out.push_back(std::to_string(cs.dropped) +
                  " samples were dropped: unwinding could not keep up (lower --rate)");
  }
  if (cs.dropped_creations > 0) {
    out.push_back(std::to_string(cs.dropped_creations) +
                  " thread creations were not counted: unwinding could not keep up");
  }
  return out;
}

std::vector<std::string> tree_notes(const TreeStats& tree, size_t max_processes) {
  std::vector<std::string> out;
  if (tree.followed > 0) {
    out.push_back("followed " + std::to_string(tree.followed) +
                  " child processes (samples labelled pid and comm); " +
                  std::to_string(tree.exited) + " exited during the capture");
  }
  if (tree.not_followed > 0) {
    out.push_back(std::to_string(tree.not_followed) +
                  " child processes ran unprofiled: over --max-processes " +
                  std::to_string(max_processes));
  }
  return out;
}

std::vector<std::string> probe_notes(ProbeCapture& probes) {
  // What each profile lost (ring, queue, bounds) is not here: the sources state it with the
  // profile (Assembly::set_loss), from the numbers its outputs print.
  std::vector<std::string> out;
  const ProbeCaptureStats ps = probes.stats();
  // The probes' notes name the heap profile when there is one (it is what they mostly
  // record), the probe-driven profiles otherwise.
  const bool heap = probes.heap() != nullptr;
  if (heap && probes.heap()->tracker().counters().frees_dropped > 0) {
    out.push_back("heap: " + std::to_string(probes.heap()->tracker().counters().frees_dropped) +
                  " free records were lost (ring full or not unwound in time): an allocation "
                  "whose free was lost stays counted in use");
  }
  if (ps.thread_dropped > 0) {
    out.push_back((heap ? "heap: " : "probes: ") + std::to_string(ps.thread_dropped) +
                  " probe hits came from threads without a slot (thread table full): their "
                  "allocations and waits were not seen");
  }
  if (heap && ps.table_dropped > 0) {
    out.push_back("heap: " + std::to_string(ps.table_dropped) +
                  " sampled allocations could not be tracked (pointer table full): their "
                  "frees are not seen");
  }
  for (const auto& n : probes.notes()) {
    out.push_back((heap ? "heap: " : "probes: ") + n);
  }
  return out;
}

void log_session_stats(const SessionResult& res, const CollectorStats& cs) {
  auto [med, worst] = median_and_max(res.pauses_ns);
  auto [stop_med, stop_worst] = median_and_max(res.stop_latencies_ns);
  logger("capture")->debug(
      "{} ticks ({:.1f}/s), {} snapshots, {} reused, {} signals re-delivered; unwound {} in "
      "{:.3f}s; pause (stop to resume) median {} worst {}; interrupt to stop median {} "
      "worst {}; cpu from {}: {} clock samples{} ({} unused), {} wall samples from records, "
      "{} tick samples deferred (the thread was waiting for a CPU when asked), {} running "
      "ticks owed to a later stop, {} looks at threads' schedstat",
      res.ticks, res.elapsed_s > 0 ? static_cast<double>(res.ticks) / res.elapsed_s : 0.0,
      res.samples, res.reused, res.signals, cs.unwound, cs.unwind_s, fmt_us(med), fmt_us(worst),
      fmt_us(stop_med), fmt_us(stop_worst), res.cpu_source, res.timer_samples,
      res.cpu_timer_error.empty() ? "" : " (CPU timer unavailable: " + res.cpu_timer_error + ")",
      res.clock_unused, res.wall_from_records, res.cpu_deferred, res.ticks_owed, res.proc_looks);
}

}  // namespace profctl
