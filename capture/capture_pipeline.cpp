// SPDX-License-Identifier: MIT
#include "capture/capture_pipeline.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <utility>

#include "attach/proc.h"
#include "base/log.h"
#include "base/proc_maps.h"
#include "base/user_error.h"
#include "capture/hottest_function.h"
#include "probe/startup_hook.h"
#include "unwind/module_refresh.h"
#include "unwind/table_unwinder.h"

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

}  // namespace

SessionPlan plan_session(const std::vector<const ProfileSource*>& sources,
                         const CaptureSettings& s) {
  SessionPlan plan;
  for (const ProfileSource* src : sources) {
    src->plan(plan, s);
  }
  plan.collector.period_ns = static_cast<int64_t>(1e9 / s.rate_hz);
  plan.probes.stack_bytes = s.probe_stack_bytes;
  plan.probes.ring_bytes = s.probe_ring_bytes;
  plan.probes.ring_wait = !s.probe_lossy;
  return plan;
}

bool seizes_new_processes(const PipelineRequest& req) {
  return req.tree.follow || plan_session(req.sources, req.settings).any_probes();
}

namespace {

bool needs_probes(const ProfileSource& src, const CaptureSettings& s) {
  SessionPlan p;
  src.plan(p, s);
  return p.any_probes();
}

// One capture, phase by phase, in the order ptrace allows: engines started while the
// target is held, the window, the last stop and the detach, then the engines finished
// while the target runs on without us.
class Pipeline {
 public:
  Pipeline(std::unique_ptr<TracedProcess> tp, const PipelineRequest& req)
      : tp_(std::move(tp)), req_(req) {
    out_.sources = req.sources;
    out_.plan = plan_session(req.sources, req.settings);
  }

  PipelineResult run(const std::atomic<bool>& stop) {
    hold_at_entry();
    out_.dwfl = modules_of(*tp_, req_.dwfl);
    out_.dwfl->share_maps(maps_memo_);
    start_collector();
    start_probes();
    auto tree = std::make_unique<ProcessTree>(*tp_, req_.tree);
    out_.root_space = tp_->space_id();
    follow_spaces(*tree);
    if (out_.probes) {
      ProbeCapture* pc = out_.probes.get();
      ProcessTree* t = tree.get();
      tree->set_followed([pc](TracedProcess& c) { pc->followed(c); });
      // The new image's modules are read while it is held with its libraries loaded.
      tree->set_child_exec([pc, t](TracedProcess& c) {
        if (pc->child_exec(c)) {
          t->note_space(c.pid(), c.space_id());
        }
      });
    }
    SessionOptions sopts = session_options(*tree);
    if (req_.launch) {
      if (req_.on_start) {
        req_.on_start(tp_->pid());
      }
      // Let go once its threads' CPU clocks are set (clones are traced already): resumed
      // before, a program of a few milliseconds could end before its first clock was set,
      // with nothing captured (1 run in 5 of Paths/RunEndLate on the records path).
      sopts.on_clocks_set = [tp = tp_.get()] { tp->resume(tp->pid()); };
    }
    SamplingSession session(*tree, std::move(sopts), *out_.collector);
    out_.session = session.run(stop);
    const auto t_end = std::chrono::steady_clock::now();
    phase("detaching");
    detach_children(std::move(tree));
    last_world_and_detach();
    finish_engines();
    logger("capture")->debug(
        "{:.3f}s from the end of the window to the engines finished",
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_end).count());
    return std::move(out_);
  }

 private:
  void phase(const std::string& what) const {
    if (req_.on_phase) {
      req_.on_phase(what);
    }
  }

  // A launched program's allocations are recorded from before its libraries' constructors:
  // the probes go in when ld.so reports its link map complete (every library mapped and
  // relocated, the allocator found where it binds malloc) and before _dl_init runs a single
  // initializer. A static program has no ld.so: its constructors run after its entry point.
  // `run`: the program is held where ld.so has loaded its libraries and not yet run a
  // constructor (its notification of a consistent link map), so that the probes go in
  // before any of its code runs and the target's modules are read with every library in
  // them. Read at the first instruction instead, they held the executable and ld.so only,
  // and a program that lived a few milliseconds could exit before the worker unwound its
  // samples, when the maps can no longer be re-read: every stack then ended in libc.
  void hold_at_entry() {
    if (!req_.launch) {
      return;
    }
    const pid_t pid = tp_->pid();
    auto hook = probe::dynamic_linker_hook(pid);
    if (hook) {
      auto r = tp_->run_to_hook(*hook, [pid] { return probe::link_map_consistent(pid); });
      if (!r) {
        if (auto st = tp_->early_exit()) {
          // ld.so gave up (a missing library: it said why on the program's stderr).
          const int code =
              st->kind() == WaitStatus::Kind::kExited ? st->exit_code() : 128 + st->signal();
          throw UserError(code, "the program ended while the dynamic linker loaded it (exit " +
                                    std::to_string(code) + "): nothing was captured");
        }
        throw UserError(ExitCode::kTargetGone, "cannot start the program: " + r.error().message());
      }
      logger("capture")->debug("held at ld.so's notification, before the constructors");
      return;
    }
    if (!out_.plan.any_probes()) {
      return;  // a static program: its modules are all there at its first instruction
    }
    logger("capture")->debug("probes go in at the entry point: {}", hook.error().message());
    if (auto r = tp_->run_to_entry(); !r) {
      throw UserError(ExitCode::kTargetGone, "cannot start the program: " + r.error().message());
    }
  }

  // The worker unwinds with a Dwfl of its own: libdwfl attaches unwinding state once per
  // Dwfl and is not thread-safe, and the caller symbolizes with `dwfl`.
  void start_collector() {
    CollectorOptions copts = out_.plan.collector;
    copts.process_labels = req_.tree.follow;
    // The factory owns what its unwinder reads: released when the worker thread ends.
    std::shared_ptr<TargetDwfl> wd = modules_of(*tp_, req_.dwfl);
    wd->share_maps(maps_memo_);
    worker_spaces_ = std::make_shared<SpaceModules>(req_.dwfl);
    std::shared_ptr<SpaceModules> ws = worker_spaces_;
    out_.collector = std::make_unique<Collector>(
        [wd, ws]() -> std::unique_ptr<Unwinder> {
          return std::make_unique<SpaceUnwinder>(*wd, *ws);
        },
        copts);
  }

  // The probes (heap, block, mutex), each collector unwinding with a Dwfl of its own. When
  // they cannot be set up, the capture goes on without the kinds that need them.
  void start_probes() {
    if (!out_.plan.any_probes()) {
      return;
    }
    ProbeCaptureOptions popts = out_.plan.probes;
    popts.allow_breakpoints = req_.launch;  // a launched program dies with profctl anyway
    popts.follow_children = req_.tree.follow;
    // By the record's space: a followed child's new image after an exec has its own.
    auto unwinder_on = [&]() -> ProbeCapture::UnwinderFactory {
      std::shared_ptr<TargetDwfl> dp = modules_of(*tp_, req_.dwfl);
      dp->share_maps(maps_memo_);
      std::shared_ptr<SpaceModules> ws = worker_spaces_;
      if (!req_.tree.follow) {
        return [dp]() -> std::unique_ptr<Unwinder> { return std::make_unique<TableUnwinder>(*dp); };
      }
      return [dp, ws]() -> std::unique_ptr<Unwinder> {
        return std::make_unique<SpaceUnwinder>(*dp, *ws);
      };
    };
    ProbeCapture::UnwinderFactory heap_unwinder = popts.heap ? unwinder_on() : nullptr;
    ProbeCapture::UnwinderFactory wait_unwinder =
        popts.block || popts.mutex ? unwinder_on() : nullptr;
    auto pc = ProbeCapture::start(*tp_, popts, heap_unwinder, wait_unwinder);
    if (pc) {
      out_.probes = std::move(*pc);
      for (const auto& n : out_.probes->notes()) {
        logger("probe")->info("probes: {}", n);
      }
      return;
    }
    out_.warnings.push_back("probes: " + pc.error().message());
    logger("probe")->warn("probe-driven profiles unavailable: {}", pc.error().message());
    std::erase_if(out_.sources,
                  [&](const ProfileSource* s) { return needs_probes(*s, req_.settings); });
    out_.plan.probes.heap = out_.plan.probes.block = out_.plan.probes.mutex = false;
    if (out_.sources.empty()) {
      throw UserError(ExitCode::kTargetGone, "the probes could not be set up: nothing to capture");
    }
  }

  // A followed image's first sample records where its modules are (its maps, read while
  // its thread is stopped: microseconds); they are loaded off the stop path (SpaceModules).
  void follow_spaces(ProcessTree& tree) {
    constexpr size_t kMaxSpaces = 256;
    SpaceModules* ws = worker_spaces_.get();
    tree.set_new_space([this, ws](pid_t pid, uint32_t space) {
      auto text = ws->size() < kMaxSpaces ? read_maps_text(pid) : Result<std::string>(Error{""});
      if (!text) {
        ++spaces_unread_;
        return;
      }
      ws->add(space, {pid, std::move(*text)});
    });
  }

  SessionOptions session_options(ProcessTree& tree) {
    SessionOptions sopts;
    sopts.rate_hz = req_.settings.rate_hz;
    if (req_.duration_s) {
      sopts.duration = std::chrono::nanoseconds(static_cast<int64_t>(*req_.duration_s * 1e9));
    }
    sopts.stack_bytes = req_.stack_bytes;
    sopts.sample = out_.plan.ticks;
    sopts.cpu_timer = out_.plan.cpu_timer;
    sopts.perf_records = out_.plan.cpu_records;
    sopts.wall = out_.plan.collector.wall;
    sopts.cpu = out_.plan.collector.cpu;
    sopts.stop_grace = req_.stop_grace;
    if (req_.on_status) {
      live_.probes = out_.probes.get();
      hottest_ = std::make_unique<HottestFunction>(*out_.dwfl, out_.root_space);
      sopts.on_status = [this](const SessionStatus& s) {
        live_.session = s;
        hottest_->update(*out_.collector);
        live_.hottest = hottest_->name();
        live_.hottest_share = hottest_->share();
        req_.on_status(live_);
      };
    }
    TargetDwfl* td = out_.dwfl.get();
    SpaceModules* ws = worker_spaces_.get();
    // A sample's pc in no module of the target: a library loaded since the last look. Its
    // maps are read now, while the target lives, into the memo the workers fall back on
    // when they unwind the sample after the target has exited.
    auto refresh = std::make_shared<ModuleRefresh>(*td);
    sopts.on_sample_pc = [td, refresh, root = tp_->space_pid()](pid_t pid, uint64_t pc) {
      if (pid == root && !td->has_module_at(pc)) {
        (void)(*refresh)(pc);
      }
    };
    // The maps are read again only when the size of the address space moved: reading them
    // costs a line per mapping (190 us a read for 64 threads' stacks, ten times a second),
    // statm a fraction of it. A library mapped and another of the very same size unmapped
    // within one check is caught by its first sample's pc (on_sample_pc above).
    auto sizes = std::make_shared<std::map<pid_t, uint64_t>>();
    auto moved = [sizes](pid_t pid) {
      const std::optional<uint64_t> pages = read_mapped_pages(pid);
      if (!pages) {
        return true;  // gone, or unreadable: the full read says which
      }
      auto [it, fresh] = sizes->try_emplace(pid, *pages);
      return fresh || std::exchange(it->second, *pages) != *pages;
    };
    sopts.on_maps_check = [td, ws, &tree, moved, root = tp_->space_pid()] {
      std::map<pid_t, bool> now;  // one look per process per check (the root may be a space too)
      auto moved_now = [&](pid_t pid) {
        auto [it, fresh] = now.try_emplace(pid, false);
        if (fresh) {
          it->second = moved(pid);
        }
        return it->second;
      };
      if (moved_now(root)) {
        (void)td->refresh();
      }
      // Libraries loaded since a followed image's first sample (its dynamic loader was
      // still at work then, or dlopen): a newer read of the maps of each image still live.
      for (const auto& [space, src] : ws->all()) {
        if (tree.current_space(src.pid) == space && moved_now(src.pid)) {
          if (auto text = read_maps_text(src.pid)) {
            ws->update(space, std::move(*text));
          }
        }
      }
    };
    return sopts;
  }

  void detach_children(std::unique_ptr<ProcessTree> tree) {
    tree->detach_children();
    out_.tree = tree->stats();
    for (auto& n : tree->take_notes()) {
      out_.warnings.push_back(std::move(n));
    }
    // Followed children detached; the target alone from here.
  }

  // The thread table and the threads profile: one last stop of the world, then detach (the
  // probes are removed in that stop).
  void last_world_and_detach() {
    const SessionResult& res = out_.session;
    if (res.end != SessionResult::End::kTargetExited && res.end != SessionResult::End::kExec) {
      CaptureOptions wopts;
      wopts.stack_bytes = req_.stack_bytes;
      wopts.detach = true;
      if (auto w = tp_->capture_world(wopts)) {
        out_.world = std::move(*w);
        out_.world_ns = out_.probes ? out_.probes->now_ns() : 0;
      }
    }
    if (res.end == SessionResult::End::kExec) {
      out_.warnings.emplace_back("the target called exec: the capture stopped there");
    }
    tp_->detach();
    out_.left_traced = out_.tree.left_traced + tp_->left_traced();
    if (const uint64_t left = out_.left_traced; left > 0) {
      // Threads in uninterruptible sleep that never reached a stop: ptrace can only detach
      // a stopped thread, so they are the kernel's to release at profctl's exit.
      out_.warnings.push_back(
          std::to_string(left) +
          " threads or processes never reached a stop and could not be detached: the kernel "
          "releases them when profctl exits" +
          (req_.launch ? " (and kills them: PTRACE_O_EXITKILL, the program was started by profctl)"
                       : ""));
    }
  }

  // With the target detached (or reaped) and running on: the engines drain and unwind
  // what they still hold, and the followed images' modules are read for symbolizing.
  void finish_engines() {
    if (out_.probes) {
      out_.probes_end_ns = out_.probes->now_ns();
      phase("unwinding the probes' records");
      out_.probes->finish();
      if (out_.probes->gone_by_exec()) {
        out_.warnings.emplace_back(
            out_.plan.probes.heap ? "the target called exec: the heap profile ends there"
                                  : "the target called exec: the probe-driven profiles end there");
      }
    }
    tp_.reset();
    phase("unwinding the last samples");
    out_.collector->finish();
    // Libraries the target loaded since the sampler last looked, for symbolizing: from its
    // maps if it still runs, else from the newest text one of its readers saw (MapsMemo).
    (void)out_.dwfl->refresh();
    load_spaces();
  }

  void load_spaces() {
    SpaceModules& ws = *worker_spaces_;
    if (ws.size() > 0) {
      phase("reading the child processes' modules");
      for (auto& [space, src] : ws.all()) {
        if (auto loaded = ws.take_loaded(space)) {
          out_.spaces[space] = std::move(loaded);  // the worker's, now idle
        } else if (auto d = TargetDwfl::for_maps(src.pid, std::move(src.maps_text), req_.dwfl)) {
          out_.spaces[space] = std::move(*d);
        } else {
          ++spaces_unread_;
        }
      }
    }
    if (spaces_unread_ > 0) {
      out_.warnings.push_back(std::to_string(spaces_unread_) +
                              " process images could not have their modules read: their "
                              "frames are unsymbolized");
    }
  }

  std::unique_ptr<TracedProcess> tp_;
  const PipelineRequest& req_;
  PipelineResult out_;
  std::shared_ptr<SpaceModules> worker_spaces_;  // the followed images' maps, by space
  // The target's latest maps, shared by its TargetDwfls (the sampler's, the workers').
  std::shared_ptr<MapsMemo> maps_memo_ = std::make_shared<MapsMemo>();
  uint64_t spaces_unread_ = 0;
  PipelineRequest::Live live_;
  std::unique_ptr<HottestFunction> hottest_;
};

}  // namespace

PipelineResult run_pipeline(std::unique_ptr<TracedProcess> tp, const PipelineRequest& req,
                            const std::atomic<bool>& stop) {
  return Pipeline(std::move(tp), req).run(stop);
}

}  // namespace profctl
