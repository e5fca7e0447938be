// SPDX-License-Identifier: MIT
#include "capture/assemble_capture.h"

#include "capture/assembly.h"
#include "capture/stage_notes.h"
#include "unwind/table_unwinder.h"

namespace profctl {
namespace {

void add_notes(Capture& c, std::vector<std::string> notes) {
  c.warnings.insert(c.warnings.end(), std::make_move_iterator(notes.begin()),
                    std::make_move_iterator(notes.end()));
}

void set_window(Capture& c, const PipelineResult& run, const CaptureSettings& s) {
  c.window.duration_s = run.session.elapsed_s;
  if (run.plan.ticks) {
    c.window.requested_hz = s.rate_hz;
    c.window.achieved_hz = run.session.elapsed_s > 0
                               ? static_cast<double>(run.session.ticks) / run.session.elapsed_s
                               : 0.0;
  }
  auto [med, worst] = median_and_max(run.session.pauses_ns);
  c.pause.median_ns = med;
  c.pause.worst_ns = worst;
  c.pause.samples = run.session.samples;
}

// The thread table from the last stopped world, its stacks unwound once (the threads
// profile groups them); a thread in a probed wait says for how long it had waited.
void add_last_world(Assembly& a) {
  PipelineResult& run = a.run();
  if (!run.world) {
    return;
  }
  TableUnwinder unwinder(*run.dwfl);
  WaitedFn waited;
  if (ProbeCapture* pcp = run.probes.get()) {
    waited = [pcp, world_ns = run.world_ns](const Snapshot& s) -> std::optional<uint64_t> {
      const uint64_t start = pcp->tsc_to_ns(s.wait_start_tsc);
      return world_ns > start ? world_ns - start : 0;
    };
  }
  a.set_world(add_thread_table(a.capture(), *run.world, unwinder, a.symbolizer(), waited));
}

}  // namespace

void describe_sources(const std::vector<const ProfileSource*>& sources, const CaptureSettings& s,
                      std::map<std::string, std::string>& options) {
  for (const ProfileSource* src : sources) {
    src->describe(options, s);
  }
}

Capture assemble_capture(PipelineResult& run, const AssembleOptions& o) {
  Capture c = new_capture(o.header, *run.dwfl);
  set_window(c, run, o.settings);
  {
    Assembly a(c, run, o.settings, o.symbolize);
    add_last_world(a);
    add_notes(c, std::move(run.warnings));
    for (const ProfileSource* src : run.sources) {
      src->add_to(a);
    }
  }
  if (run.probes) {
    add_notes(c, probe_notes(*run.probes));
  }
  add_notes(c, collector_notes(run.collector->stats()));
  add_notes(c, tree_notes(run.tree, o.max_processes));
  if ((run.plan.collector.cpu || run.plan.collector.wall) && !run.session.cpu_source.empty()) {
    c.options["cpu_samples"] = run.session.cpu_source;
  }
  add_notes(c, session_notes(run.session, run.plan,
                             {o.settings.rate_hz, o.launch, o.stop_signal, o.stop_grace}));
  log_session_stats(run.session, run.collector->stats());
  return c;
}

}  // namespace profctl
