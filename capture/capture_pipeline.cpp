// SPDX-License-Identifier: MIT
#include "capture/capture_pipeline.h"

#include <chrono>

#include "attach/proc.h"
#include "base/log.h"
#include "base/user_error.h"
#include "symbolize/symbolizer.h"
#include "unwind/dwfl_unwinder.h"

namespace profctl {
namespace {

std::unique_ptr<TargetDwfl> modules_of(const TracedProcess& tp, const DwflOptions& o) {
  auto d = TargetDwfl::for_process(tp.space_pid(), o);
  if (!d) {
    throw UserError(
        ExitCode::kTargetGone,
        "cannot read the modules of pid " + std::to_string(tp.pid()) + ": " + d.error().message());
  }
  return std::move(*d);
}

// The probes (heap, block, mutex), each collector unwinding with a Dwfl of its own.
void start_probes(TracedProcess& tp, const PipelineRequest& req, PipelineResult& out) {
  const bool heap = out.kinds.count("heap") > 0;
  const bool block = out.kinds.count("block") > 0;
  const bool mutex = out.kinds.count("mutex") > 0;
  if (!heap && !block && !mutex) {
    return;
  }
  ProbeCaptureOptions popts = req.probes;
  popts.heap = heap;
  popts.block = block;
  popts.mutex = mutex;
  popts.allow_breakpoints = req.launch;  // a launched program dies with profctl anyway
  auto unwinder_on = [&]() -> ProbeCapture::UnwinderFactory {
    out.probe_dwfls.push_back(modules_of(tp, req.dwfl));
    TargetDwfl* dp = out.probe_dwfls.back().get();
    return [dp]() -> std::unique_ptr<Unwinder> { return std::make_unique<DwflUnwinder>(*dp); };
  };
  ProbeCapture::UnwinderFactory heap_unwinder = heap ? unwinder_on() : nullptr;
  ProbeCapture::UnwinderFactory wait_unwinder = block || mutex ? unwinder_on() : nullptr;
  auto pc = ProbeCapture::start(tp, popts, heap_unwinder, wait_unwinder);
  if (pc) {
    out.probes = std::move(*pc);
    for (const auto& n : out.probes->notes()) {
      logger("probe")->info("probes: {}", n);
    }
    return;
  }
  out.warnings.push_back("probes: " + pc.error().message());
  logger("probe")->warn("probe-driven profiles unavailable: {}", pc.error().message());
  for (const char* k : {"heap", "block", "mutex"}) {
    out.kinds.erase(k);
  }
  if (out.kinds.empty()) {
    throw UserError(ExitCode::kTargetGone, "the probes could not be set up: nothing to capture");
  }
}

}  // namespace

PipelineResult run_pipeline(std::unique_ptr<TracedProcess> tp, const PipelineRequest& req,
                            const std::atomic<bool>& stop) {
  PipelineResult out;
  out.kinds = req.kinds;
  const bool probes_requested =
      out.kinds.count("heap") || out.kinds.count("block") || out.kinds.count("mutex");
  if (req.launch && probes_requested) {
    // Allocations are recorded from the program's entry point: its libraries are loaded
    // (the allocator can be found and probed) and none of its code has run yet.
    if (auto r = tp->run_to_entry(); !r) {
      throw UserError(ExitCode::kTargetGone, "cannot start the program: " + r.error().message());
    }
  }
  out.dwfl = modules_of(*tp, req.dwfl);

  CollectorOptions copts;
  for (const char* k : {"cpu", "wall", "threadcreate"}) {
    if (out.kinds.count(k)) {
      copts.kinds.insert(k);
    }
  }
  copts.period_ns = static_cast<int64_t>(1e9 / req.rate_hz);
  // The worker unwinds with a Dwfl of its own: libdwfl attaches unwinding state once per
  // Dwfl and is not thread-safe, and the caller symbolizes with `dwfl`.
  out.worker_dwfl = modules_of(*tp, req.dwfl);
  copts.process_labels = req.tree.follow;
  TargetDwfl* wd = out.worker_dwfl.get();
  out.worker_spaces = std::make_unique<SpaceModules>(req.dwfl);
  SpaceModules* ws = out.worker_spaces.get();
  out.collector = std::make_unique<Collector>(
      [wd, ws]() -> std::unique_ptr<Unwinder> { return std::make_unique<SpaceUnwinder>(*wd, *ws); },
      copts);

  start_probes(*tp, req, out);

  SessionOptions sopts;
  sopts.rate_hz = req.rate_hz;
  if (req.duration_s) {
    sopts.duration = std::chrono::nanoseconds(static_cast<int64_t>(*req.duration_s * 1e9));
  }
  sopts.stack_bytes = req.stack_bytes;
  sopts.sample = out.kinds.count("cpu") || out.kinds.count("wall");
  sopts.cpu_timer = req.cpu_timer && out.kinds.count("cpu") > 0;
  sopts.stop_grace = req.stop_grace;
  // The live view names the hottest function so far: the collector's hottest innermost
  // pcs, named (without source lines) once a second on this thread, which owns `dwfl`.
  std::unique_ptr<Symbolizer> live_sym;
  PipelineRequest::Live live;
  auto last_hot = std::chrono::steady_clock::time_point{};
  if (req.on_status) {
    live.probes = out.probes.get();
    SymbolizeOptions so;
    so.source = false;
    so.inline_frames = false;
    live_sym = std::make_unique<Symbolizer>(*out.dwfl, so);
    sopts.on_status = [&](const SessionStatus& s) {
      live.session = s;
      const auto now = std::chrono::steady_clock::now();
      if (now - last_hot >= std::chrono::seconds(1)) {
        last_hot = now;
        std::map<std::string, uint64_t> by_function;
        uint64_t total = 0;
        for (const auto& leaf : out.collector->hottest_leaves(256)) {
          total += leaf.cpu_ns;
          if (leaf.space != 0 && leaf.space != out.root_space) {
            continue;  // a child's image: its modules are not this Dwfl's
          }
          const auto& frames = live_sym->symbolize(leaf.pc, /*activation=*/true);
          if (!frames.empty() && frames.back().function) {
            by_function[*frames.back().function] += leaf.cpu_ns;
          }
        }
        auto best =
            std::max_element(by_function.begin(), by_function.end(),
                             [](const auto& a, const auto& b) { return a.second < b.second; });
        if (best != by_function.end() && total > 0) {
          live.hottest = best->first;
          live.hottest_share = static_cast<double>(best->second) / static_cast<double>(total);
        }
      }
      req.on_status(live);
    };
  }
  auto tree_owner = std::make_unique<ProcessTree>(*tp, req.tree);
  ProcessTree& tree = *tree_owner;
  out.root_space = tp->space_id();
  // A followed image's first sample records where its modules are (its maps, read while
  // its thread is stopped: microseconds); they are loaded off the stop path (SpaceModules).
  constexpr size_t kMaxSpaces = 256;
  uint64_t spaces_unread = 0;
  tree.set_new_space([&](pid_t pid, uint32_t space) {
    auto text = ws->size() < kMaxSpaces ? read_maps_text(pid) : Result<std::string>(Error{""});
    if (!text) {
      ++spaces_unread;
      return;
    }
    ws->add(space, {pid, std::move(*text)});
  });
  TargetDwfl* td = out.dwfl.get();
  sopts.on_maps_check = [td, ws, &tree] {
    (void)td->refresh();
    // Libraries loaded since a followed image's first sample (its dynamic loader was
    // still at work then, or dlopen): a newer read of the maps of each image still live.
    for (const auto& [space, src] : ws->all()) {
      if (tree.current_space(src.pid) == space) {
        if (auto text = read_maps_text(src.pid)) {
          ws->update(space, std::move(*text));
        }
      }
    }
  };
  if (req.launch) {
    if (req.on_start) {
      req.on_start(tp->pid());
    }
    tp->resume(tp->pid());  // from its first instruction, now that clones are traced
  }
  SamplingSession session(tree, sopts, *out.collector);
  out.session = session.run(stop);
  out.duration_s = out.session.elapsed_s;
  const auto t_end = std::chrono::steady_clock::now();
  auto phase = [&](const std::string& what) {
    if (req.on_phase) {
      req.on_phase(what);
    }
  };
  phase("detaching");
  tree.detach_children();
  out.tree = tree.stats();
  for (auto& n : tree.take_notes()) {
    out.warnings.push_back(std::move(n));
  }
  tree_owner.reset();  // followed children detached; the target alone from here

  // The thread table and the threads profile: one last stop of the world, then detach.
  const SessionResult& res = out.session;
  if (res.end != SessionResult::End::kTargetExited && res.end != SessionResult::End::kExec) {
    CaptureOptions wopts;
    wopts.stack_bytes = req.stack_bytes;
    wopts.detach = true;
    if (auto w = tp->capture_world(wopts)) {
      out.world = std::move(*w);
      out.world_ns = out.probes ? out.probes->now_ns() : 0;
    }
  }
  if (res.end == SessionResult::End::kExec) {
    out.warnings.emplace_back("the target called exec: the capture stopped there");
  }
  tp->detach();  // the probes are removed in the last stopped world
  out.left_traced = out.tree.left_traced + tp->left_traced();
  if (const uint64_t left = out.left_traced; left > 0) {
    // Threads in uninterruptible sleep that never reached a stop: ptrace can only detach a
    // stopped thread, so they are the kernel's to release at profctl's exit.
    out.warnings.push_back(
        std::to_string(left) +
        " threads or processes never reached a stop and could not be detached: the kernel "
        "releases them when profctl exits" +
        (req.launch ? " (and kills them: PTRACE_O_EXITKILL, the program was started by profctl)"
                    : ""));
  }
  if (out.probes) {
    out.probes_end_ns = out.probes->now_ns();
    phase("unwinding the probes' records");
    out.probes->finish();
    if (out.probes->gone_by_exec()) {
      out.warnings.emplace_back(
          out.kinds.count("heap") ? "the target called exec: the heap profile ends there"
                                  : "the target called exec: the probe-driven profiles end there");
    }
  }
  tp.reset();  // detached (or reaped): the target runs on without us
  phase("unwinding the last samples");
  out.collector->finish();
  if (ws->size() > 0) {
    phase("reading the child processes' modules");
    for (auto& [space, src] : ws->all()) {
      if (auto loaded = ws->take_loaded(space)) {
        out.spaces[space] = std::move(loaded);  // the worker's, now idle
      } else if (auto d = TargetDwfl::for_maps(src.pid, std::move(src.maps_text), req.dwfl)) {
        out.spaces[space] = std::move(*d);
      } else {
        ++spaces_unread;
      }
    }
  }
  if (spaces_unread > 0) {
    out.warnings.push_back(std::to_string(spaces_unread) +
                           " process images could not have their modules read: their frames "
                           "are unsymbolized");
  }
  out.finish_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_end).count();
  return out;
}

}  // namespace profctl
