// SPDX-License-Identifier: MIT
#include "cli/capture_command.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "attach/proc.h"
#include "attach/sampling_session.h"
#include "attach/traced_process.h"
#include "base/log.h"
#include "capture/capture_pipeline.h"
#include "capture/probe_capture.h"
#include "cli/capture_assembly.h"
#include "cli/common.h"
#include "cli/finish_progress.h"
#include "cli/heap_options.h"
#include "cli/outputs.h"
#include "cli/signals.h"
#include "cli/wait_options.h"
#include "profile/collector.h"
#include "report/capture_summary.h"
#include "symbolize/data_symbol.h"
#include "unwind/dwfl_unwinder.h"

namespace profctl::cli {
namespace {

const std::set<std::string> kSampled = {"cpu", "wall", "threadcreate", "threads"};
const std::set<std::string> kProbed = {"heap", "block", "mutex"};

struct CaptureOptionsCli {
  CommonOptions common;
  std::string pid;
  std::vector<std::string> command;
  std::string duration;
  double rate = 99;
  std::string profiles = "cpu,wall,threadcreate,threads";
  std::string output;
  std::string format = "all";
  size_t stack_bytes = 8u << 20;
  bool no_inline = false;
  bool no_source = false;
  size_t top = 10;
  HeapOptionsCli heap;   // --mem-rate, --leak-age, --sample-index
  WaitOptionsCli waits;  // --block-rate, --mutex-fraction
  bool lines = false;
  bool children = false;     // attach --children
  bool no_children = false;  // run --no-children
  size_t max_processes = 64;
};

std::set<std::string> parse_profiles(const std::string& list) {
  std::set<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "all") {
      out.insert(kSampled.begin(), kSampled.end());
      out.insert(kProbed.begin(), kProbed.end());
    } else if (kSampled.count(item) || kProbed.count(item)) {
      out.insert(item);
    } else if (!item.empty()) {
      throw UserError(ExitCode::kUsage, "unknown profile '" + item + "'",
                      "use cpu,wall,threadcreate,threads,heap,block,mutex (or all)");
    }
  }
  if (out.empty()) {
    throw UserError(ExitCode::kUsage, "--profiles is empty",
                    "use cpu,wall,threadcreate,threads,heap,block,mutex");
  }
  return out;
}

void add_shared_options(CLI::App& sub, CaptureOptionsCli& o) {
  sub.add_option("-d,--duration", o.duration,
                 "How long to capture (30s, 500ms, 2m); default: until ^C")
      ->check(duration_value());
  sub.add_option("--rate", o.rate, "Stack samples per second per thread")
      ->check(rate_value())
      ->capture_default_str();
  sub.add_option("--profiles", o.profiles, "cpu,wall,threadcreate,threads,heap,block,mutex or all")
      ->capture_default_str();
  sub.add_option("-o,--output", o.output, "Write capture.json and per-profile files to DIR");
  sub.add_option("--format", o.format, "With -o: json,pprof,text,folded,flamegraph or all")
      ->capture_default_str();
  sub.add_option("--stack-bytes", o.stack_bytes, "Most stack bytes copied per snapshot")
      ->transform(stack_bytes_value())
      ->capture_default_str();
  sub.add_flag("--no-inline", o.no_inline, "Do not expand inlined frames");
  sub.add_flag("--no-source", o.no_source, "Do not look up source file:line");
  sub.add_option("--top", o.top, "Stacks per profile in text output")
      ->check(top_value())
      ->capture_default_str();
  sub.add_flag("--lines", o.lines, "Text and folded output: group by source line, not by function");
  sub.add_option("--max-processes", o.max_processes,
                 "Child processes followed at once; the others run unprofiled")
      ->check(CLI::Range(size_t{1}, size_t{4096}))
      ->capture_default_str();
  add_heap_capture_options(sub, o.heap);
  add_wait_capture_options(sub, o.waits);
  add_common_options(sub, o.common);
}

std::string fmt_us(uint64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0fus", static_cast<double>(ns) / 1e3);
  return buf;
}

// The block/mutex samples' "lock" label, named by the static symbol that holds the lock,
// or, for a lock inside a heap object the heap profile saw allocated, by the function that
// allocated it (`heap_object`: the allocation's stack, or nothing).
using HeapObjectFn = std::function<std::optional<std::string>(uint64_t address)>;
void name_locks(Profile& p, const TargetDwfl& td, const HeapObjectFn& heap_object = {}) {
  for (Sample& s : p.samples) {
    auto it = s.labels.find("lock");
    if (it == s.labels.end()) {
      continue;
    }
    const uint64_t addr = std::strtoull(it->second.c_str(), nullptr, 16);
    if (auto name = data_symbol(td, addr)) {
      s.labels["lock_name"] = *name;
    } else if (heap_object) {
      if (auto where = heap_object(addr)) {
        s.labels["lock_name"] = "heap object allocated in " + *where;
      }
    }
  }
}

// The live status line: elapsed and remaining time, the achieved sampling rate, the
// target's CPU use, processes and threads, the hottest function so far, the probes' counts.
std::string live_line(const PipelineRequest::Live& l, double rate, const char* probes_what) {
  const SessionStatus& s = l.session;
  char buf[512];
  std::string when;
  if (s.duration_s > 0) {
    std::snprintf(buf, sizeof buf, "%.1fs, %.0fs left", s.elapsed_s,
                  std::max(0.0, s.duration_s - s.elapsed_s));
  } else {
    std::snprintf(buf, sizeof buf, "%.1fs (^C to stop)", s.elapsed_s);
  }
  when = buf;
  const double hz = s.elapsed_s > 0.5 ? static_cast<double>(s.ticks) / s.elapsed_s : rate;
  const double cpu = s.elapsed_s > 0 ? 100.0 * s.cpu_s / s.elapsed_s : 0.0;
  std::string procs = s.processes > 1 ? std::to_string(s.processes) + " processes, " : "";
  std::snprintf(buf, sizeof buf,
                "profctl: %s  %.0f/%.0f Hz  cpu %.0f%%  %s%zu threads  %llu samples", when.c_str(),
                hz, rate, cpu, procs.c_str(), s.threads,
                static_cast<unsigned long long>(s.samples));
  std::string line = buf;
  if (!l.hottest.empty()) {
    std::snprintf(buf, sizeof buf, "  hot: %s %.0f%%", l.hottest.c_str(), 100.0 * l.hottest_share);
    line += buf;
  }
  if (l.probes != nullptr) {
    line += probes_what + std::to_string(l.probes->records()) + " recorded " +
            std::to_string(l.probes->dropped()) + " dropped";
  }
  // One terminal line: a wrapped status line would scroll instead of being redrawn.
  if (line.size() > 160) {
    line.resize(160);
  }
  return line;
}

int run_capture(const CaptureOptionsCli& o, bool launch) {
  apply_logging(o.common);
  auto log = logger("cli");
  std::set<std::string> kinds = parse_profiles(o.profiles);
  std::set<std::string> formats = parse_formats(o.format);
  // The heap profile's options, checked before attaching (a bad value is a usage error).
  const HeapOptions heap = resolve_heap_options(o.heap);
  const WaitOptions waits = resolve_wait_options(o.waits);
  const bool heap_requested = kinds.count("heap") > 0;
  const bool block_requested = kinds.count("block") > 0;
  const bool mutex_requested = kinds.count("mutex") > 0;
  std::optional<OutputDir> out_dir;
  if (!o.output.empty()) {
    out_dir = prepare_output_dir(o.output);  // before the target is touched: found now
  }
  std::optional<double> duration_s;
  if (!o.duration.empty()) {
    duration_s = parse_duration_s(o.duration);
  }
  // Handlers first: a SIGINT that arrives while modules load must end the capture
  // cleanly (detach, write), not kill profctl with the target seized.
  install_capture_signals(0);
  const std::string start = utc_now_rfc3339();
  auto seized = launch ? TracedProcess::launch(o.command) : TracedProcess::seize(parse_pid(o.pid));
  if (auto* err = std::get_if<AttachError>(&seized)) {
    if (launch) {
      throw UserError(ExitCode::kUsage, err->message, err->hint);
    }
    throw_attach_error(*err);
  }
  auto& tp = std::get<std::unique_ptr<TracedProcess>>(seized);
  const pid_t pid = tp->pid();
  CaptureHeader h;
  h.pid = pid;
  h.start = start;
  h.exe = read_exe(pid);
  h.cmdline = read_cmdline(pid);
  h.options = {{"rate_hz", std::to_string(o.rate)},
               {"profiles", o.profiles},
               {"duration", o.duration.empty() ? "until interrupted" : o.duration},
               {"stack_bytes", std::to_string(o.stack_bytes)},
               {"mode", launch ? "run" : "attach"},
               {"children", (launch ? !o.no_children : o.children)
                                ? "followed (at most " + std::to_string(o.max_processes) + ")"
                                : "not followed"}};
  if (heap_requested) {
    h.options["mem_rate"] = std::to_string(heap.mem_rate);
    h.options["leak_age_ns"] = std::to_string(heap.leak_age_ns);
  }
  if (block_requested) {
    h.options["block_rate_ns"] = std::to_string(waits.block_rate_ns);
  }
  if (mutex_requested) {
    h.options["mutex_fraction"] = std::to_string(waits.mutex_fraction);
  }

  PipelineRequest req;
  req.launch = launch;
  req.kinds = kinds;
  req.rate_hz = o.rate;
  req.duration_s = duration_s;
  req.stack_bytes = o.stack_bytes;
  req.probes.mem_rate = static_cast<int64_t>(heap.mem_rate);
  req.probes.block_rate_ns = waits.block_rate_ns;
  req.probes.mutex_fraction = waits.mutex_fraction;
  req.probes.stack_bytes = static_cast<uint32_t>(heap.probe_stack_bytes);
  req.dwfl.debuginfod = o.common.debuginfod;
  // CPU samples from each thread's own CPU clock, where the CPU really was (see
  // attach/cpu_timer.h); PROFCTL_CPU_TICKS=1 keeps the ticker-driven cpu profile.
  req.cpu_timer = std::getenv("PROFCTL_CPU_TICKS") == nullptr;
  const bool live = isatty(STDERR_FILENO) && o.common.verbose == 0;
  if (live) {
    const char* what = heap_requested ? "  allocs+waits " : "  waits ";
    if (!block_requested && !mutex_requested) {
      what = "  allocs ";
    }
    const double rate = o.rate;
    req.on_status = [what, rate](const PipelineRequest::Live& l) {
      std::fputs(("\r\033[K" + live_line(l, rate, what)).c_str(), stderr);
    };
  }
  req.on_start = [](pid_t p) { set_forward_pid(p); };
  auto progress = std::make_unique<FinishProgress>(isatty(STDERR_FILENO) != 0);
  req.on_phase = [&progress, live](const std::string& what) {
    if (live) {
      std::fputs("\r\033[K", stderr);  // the status line is over
    }
    progress->phase(what);
  };
  req.tree.follow = launch ? !o.no_children : o.children;
  req.stop_grace = launch ? kRunStopGrace : std::chrono::milliseconds(0);
  req.tree.max_processes = o.max_processes;
  PipelineResult run = run_pipeline(std::move(tp), req, stop_requested());
  if (live) {
    std::fprintf(stderr, "\r\033[K");
  }
  kinds = run.kinds;
  std::vector<std::string> warnings = std::move(run.warnings);
  const SessionResult& res = run.session;
  TargetDwfl& td = *run.dwfl;
  const Collector& collector = *run.collector;
  std::unique_ptr<ProbeCapture>& probes = run.probes;
  const auto& world = run.world;
  const uint64_t world_ns = run.world_ns;
  const uint64_t heap_end_ns = run.probes_end_ns;

  progress->phase("symbolizing");
  SymbolizeOptions symopts;
  symopts.inline_frames = !o.no_inline;
  symopts.source = !o.no_source;
  Capture c = new_capture(h, td);
  c.window.duration_s = run.duration_s;
  if (kinds.count("cpu") || kinds.count("wall")) {
    c.window.requested_hz = o.rate;
    c.window.achieved_hz = run.session.elapsed_s > 0
                               ? static_cast<double>(run.session.ticks) / run.session.elapsed_s
                               : 0.0;
  }
  {
    Symbolizer sym(td, symopts);
    if (world) {
      DwflUnwinder unwinder(td);
      WaitedFn waited;
      if (probes) {
        ProbeCapture* pcp = probes.get();
        waited = [pcp, world_ns](const Snapshot& s) -> std::optional<uint64_t> {
          const uint64_t start = pcp->tsc_to_ns(s.wait_start_tsc);
          return world_ns > start ? world_ns - start : 0;
        };
      }
      add_world(c, *world, unwinder, sym, kinds.count("threads") > 0, waited);
    }
    // Each followed image's samples are named from its own modules; the target's (and a
    // forked child's, which shares them until it execs) from `td`.
    std::map<uint32_t, std::unique_ptr<Symbolizer>> space_syms;
    auto sym_for = [&](uint32_t space) -> Symbolizer& {
      auto d = run.spaces.find(space);
      if (space == 0 || space == run.root_space || d == run.spaces.end()) {
        return sym;
      }
      auto& s = space_syms[space];
      if (!s) {
        s = std::make_unique<Symbolizer>(*d->second, symopts);
      }
      return *s;
    };
    add_profiles(c, collector, sym_for);
    HeapObjectFn heap_object;
    if (probes && probes->heap()) {
      // The allocating function: the first frame above the allocator (not in libc or
      // libstdc++, whose operator new and malloc are the probed entry).
      heap_object = [&probes, &sym](uint64_t addr) -> std::optional<std::string> {
        auto stack = probes->heap()->tracker().allocation_stack(addr);
        if (!stack) {
          return std::nullopt;
        }
        for (const Frame& f : symbolize_stack(probes->heap()->stacks().get(*stack), sym)) {
          const bool runtime = f.module.find("/libc.so") != std::string::npos ||
                               f.module.find("/libstdc++.so") != std::string::npos;
          if (!runtime && f.function) {
            return *f.function;
          }
        }
        return std::nullopt;
      };
    }
    if (probes && probes->waits()) {
      WaitCollector& wc = *probes->waits();
      if (block_requested) {
        add_profile(c, "block", wc.block(), wc.stacks(), sym);
        name_locks(c.profiles["block"], td, heap_object);
      }
      if (mutex_requested) {
        add_profile(c, "mutex", wc.mutex(), wc.stacks(), sym);
        name_locks(c.profiles["mutex"], td, heap_object);
        if (wc.stats().wakes > 0) {
          add_profile(c, "mutex_holders", wc.mutex_holders(), wc.stacks(), sym);
          name_locks(c.profiles["mutex_holders"], td, heap_object);
        }
        if (wc.stats().unattributed > 0) {
          warnings.push_back("mutex_holders: " + std::to_string(wc.stats().unattributed) +
                             " contentions have no recorded release (rwlocks, whose releases "
                             "are not probed, or locks released before the probes were in)");
        }
      }
      if (wc.stats().dropped > 0) {
        warnings.push_back("block/mutex: " + std::to_string(wc.stats().dropped) +
                           " waits were dropped: unwinding could not keep up");
      }
    }
    if (probes && !probes->heap()) {
      ProbeCaptureStats ps = probes->stats();
      if (ps.ring_dropped > 0) {
        warnings.push_back("block/mutex: " + std::to_string(ps.ring_dropped) +
                           " wait records were dropped: the probe ring was full");
      }
      for (const auto& n : probes->notes()) {
        warnings.push_back("probes: " + n);
      }
    }
    if (probes && probes->heap()) {
      HeapResult hr = probes->heap()->tracker().result(heap_end_ns, heap.leak_age_ns);
      add_heap_profile(c, hr, probes->heap()->stacks(), sym);
      ProbeCaptureStats hs = probes->stats();
      if (hs.ring_dropped > 0) {
        warnings.push_back("heap: " + std::to_string(hs.ring_dropped) +
                           " allocation records were dropped: the probe ring was full");
      }
      if (hs.table_dropped > 0) {
        warnings.push_back("heap: " + std::to_string(hs.table_dropped) +
                           " sampled allocations could not be tracked (pointer table full): "
                           "their frees are not seen");
      }
      for (const auto& n : probes->notes()) {
        warnings.push_back("heap: " + n);
      }
    }
  }
  auto [med, worst] = median_and_max(res.pauses_ns);
  c.pause.median_ns = med;
  c.pause.worst_ns = worst;
  c.pause.samples = res.samples;
  const CollectorStats& cs = collector.stats();
  if (cs.dropped > 0) {
    warnings.push_back(std::to_string(cs.dropped) +
                       " samples were dropped: unwinding could not keep up (lower --rate)");
  }
  if (cs.dropped_creations > 0) {
    warnings.push_back(std::to_string(cs.dropped_creations) +
                       " thread creations were not counted: unwinding could not keep up");
  }
  if (res.lost > 0) {
    warnings.push_back(std::to_string(res.lost) +
                       " thread samples were lost: the thread did not stop in time");
  }
  const bool sampled = kinds.count("cpu") || kinds.count("wall");
  if (sampled && res.elapsed_s >= 1.0 && res.ticks < 0.8 * o.rate * res.elapsed_s) {
    char buf[160];
    std::snprintf(buf, sizeof buf,
                  "sampled at %.1f Hz instead of %.0f Hz: the machine's CPUs were too busy for the "
                  "threads to reach their stops in time",
                  res.ticks / res.elapsed_s, o.rate);
    warnings.emplace_back(buf);
  }
  if (run.tree.followed > 0) {
    warnings.push_back("followed " + std::to_string(run.tree.followed) +
                       " child processes (samples labelled pid and comm); " +
                       std::to_string(run.tree.exited) + " exited during the capture");
  }
  if (run.tree.not_followed > 0) {
    warnings.push_back(std::to_string(run.tree.not_followed) +
                       " child processes ran unprofiled: over --max-processes " +
                       std::to_string(o.max_processes));
  }
  if (res.end == SessionResult::End::kTargetExited) {
    warnings.emplace_back(launch ? "the program exited" : "the target exited during the capture");
  }
  if (launch && res.end == SessionResult::End::kInterrupted) {
    warnings.push_back(signal_name(last_stop_signal()) + ": the program had not exited " +
                       std::to_string(kRunStopGrace.count()) +
                       " ms later; the capture ended without it");
  }
  c.warnings.insert(c.warnings.end(), warnings.begin(), warnings.end());
  auto [stop_med, stop_worst] = median_and_max(res.stop_latencies_ns);
  log->debug(
      "{} ticks ({:.1f}/s), {} snapshots, {} reused, {} signals re-delivered; unwound {} in "
      "{:.3f}s; pause (stop to resume) median {} worst {}; interrupt to stop median {} "
      "worst {}; cpu: {} timer samples{}, {} tick samples deferred (the thread was waiting for a "
      "CPU when asked)",
      res.ticks, res.elapsed_s > 0 ? res.ticks / res.elapsed_s : 0.0, res.samples, res.reused,
      res.signals, cs.unwound, cs.unwind_s, fmt_us(med), fmt_us(worst), fmt_us(stop_med),
      fmt_us(stop_worst), res.timer_samples,
      res.cpu_timer_error.empty() ? "" : " (CPU timer unavailable: " + res.cpu_timer_error + ")",
      res.cpu_deferred);

  progress->phase("writing the reports");
  if (out_dir) {
    const auto files = write_output_dir(c, *out_dir, formats, {o.top, o.lines, heap.sample_index});
    progress.reset();  // its line cleared before the summary
    for (const auto& w : c.warnings) {
      std::cerr << "profctl: note: " << w << "\n";
    }
    CaptureSummary sum;
    sum.samples = res.samples;
    sum.reused = res.reused;
    sum.lost = res.lost;
    sum.achieved_hz = res.elapsed_s > 0 ? static_cast<double>(res.ticks) / res.elapsed_s : 0.0;
    sum.requested_hz = res.ticks > 0 ? o.rate : 0.0;
    sum.dir = o.output;
    sum.files = files;
    write_capture_summary(c, sum, std::cerr);
  } else {
    progress.reset();
    print_summary(c, "", {o.top, o.lines, heap.sample_index});
  }

  if (probes && !probes->left().empty() && res.end != SessionResult::End::kTargetExited) {
    std::string what;
    for (const auto& l : probes->left()) {
      what += (what.empty() ? "" : ", ") + l;
    }
    std::cerr << "profctl: the probes could not be removed completely; left in pid " << pid
              << ": " << what << " (disabled: nothing jumps there)\n";
    if (!launch) {
      return static_cast<int>(ExitCode::kLeftBehind);
    }
  }
  if (launch) {
    int st = res.exit_status;
    if (res.end != SessionResult::End::kTargetExited) {
      // Detached early (-d, exec, or profctl was told to stop): the command is still our
      // child, so its exit status is still ours to report — unless profctl was told to stop
      // and the command has not exited within the grace: profctl ends, it runs on.
      auto w = wait_program_exit(pid);
      if (!w) {
        const int sig = last_stop_signal();
        std::fprintf(stderr, "profctl: the program (pid %d) had not exited %lld ms after %s: %s\n",
                     static_cast<int>(pid), static_cast<long long>(kRunStopGrace.count()),
                     signal_name(sig).c_str(),
                     run.left_traced == 0
                         ? "it runs on, no longer traced"
                         : "the processes of the threads that never stopped are killed as "
                           "profctl exits (PTRACE_O_EXITKILL), the others run on, no longer "
                           "traced");
        return 128 + sig;
      }
      st = *w;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : WIFSIGNALED(st) ? 128 + WTERMSIG(st) : 0;
  }
  return res.end == SessionResult::End::kTargetExited ? static_cast<int>(ExitCode::kTargetGone) : 0;
}

}  // namespace

std::function<int()> add_attach_command(CLI::App& app) {
  auto o = std::make_shared<CaptureOptionsCli>();
  CLI::App* sub = app.add_subcommand("attach", "Profile a running process for a while");
  sub->add_option("PID", o->pid, "Process id")->required();
  sub->add_flag("--children", o->children,
                "Also profile the processes the target starts during the capture");
  add_shared_options(*sub, *o);
  return [sub, o]() -> int { return sub->parsed() ? run_capture(*o, false) : -1; };
}

std::function<int()> add_run_command(CLI::App& app) {
  auto o = std::make_shared<CaptureOptionsCli>();
  CLI::App* sub =
      app.add_subcommand("run", "Start a command under profctl and profile it until it exits");
  sub->add_flag("--no-children", o->no_children,
                "Profile the command alone, not the processes it starts");
  add_shared_options(*sub, *o);
  sub->add_option("COMMAND", o->command, "The command and its arguments (after --)")->required();
  sub->prefix_command(false);
  return [sub, o]() -> int { return sub->parsed() ? run_capture(*o, true) : -1; };
}

}  // namespace profctl::cli
