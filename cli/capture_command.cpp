// SPDX-License-Identifier: MIT
#include "cli/capture_command.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <optional>
#include <set>

#include "attach/proc.h"
#include "attach/sampling_session.h"
#include "attach/traced_process.h"
#include "capture/assemble_capture.h"
#include "capture/capture_pipeline.h"
#include "capture/probe_capture.h"
#include "capture/source_registry.h"
#include "cli/common.h"
#include "cli/finish_progress.h"
#include "cli/heap_options.h"
#include "cli/outputs.h"
#include "cli/signals.h"
#include "cli/wait_options.h"
#include "report/capture_summary.h"

namespace profctl::cli {
namespace {

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

void add_shared_options(CLI::App& sub, CaptureOptionsCli& o) {
  sub.add_option("-d,--duration", o.duration,
                 "How long to capture (30s, 500ms, 2m); default: until ^C")
      ->check(duration_value());
  sub.add_option("--rate", o.rate, "Stack samples per second per thread")
      ->check(rate_value())
      ->capture_default_str();
  sub.add_option("--profiles", o.profiles, profile_names() + " or all")->capture_default_str();
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

// The user's settings for the sources, checked before the target is touched (a bad value
// is a usage error).
CaptureSettings settings_of(const CaptureOptionsCli& o, const HeapOptions& heap,
                            const WaitOptions& waits) {
  CaptureSettings s;
  s.rate_hz = o.rate;
  // CPU samples from each thread's own CPU clock, where the CPU really was (see
  // attach/cpu_timer.h); PROFCTL_CPU_TICKS=1 keeps the ticker-driven cpu profile.
  s.cpu_timer = std::getenv("PROFCTL_CPU_TICKS") == nullptr;
  // PROFCTL_CPU_SIGNALS=1: the CPU clocks' signals (a stop per sample) even where the
  // kernel's sample records are allowed, as on a machine that refuses them.
  s.cpu_records = std::getenv("PROFCTL_CPU_SIGNALS") == nullptr;
  s.mem_rate = static_cast<int64_t>(heap.mem_rate);
  s.leak_age_ns = heap.leak_age_ns;
  s.probe_stack_bytes = static_cast<uint32_t>(heap.probe_stack_bytes);
  s.probe_ring_bytes = heap.probe_ring_bytes;
  s.probe_lossy = heap.probe_lossy;
  s.block_rate_ns = waits.block_rate_ns;
  s.mutex_fraction = waits.mutex_fraction;
  return s;
}

bool follows_children(const CaptureOptionsCli& o, bool launch) {
  return launch ? !o.no_children : o.children;
}

CaptureHeader header_of(const CaptureOptionsCli& o, bool launch, pid_t pid, std::string start,
                        const std::vector<const ProfileSource*>& sources,
                        const CaptureSettings& settings) {
  CaptureHeader h;
  h.pid = pid;
  h.start = std::move(start);
  h.exe = read_exe(pid);
  h.cmdline = read_cmdline(pid);
  h.options = {{"rate_hz", std::to_string(o.rate)},
               {"profiles", o.profiles},
               {"duration", o.duration.empty() ? "until interrupted" : o.duration},
               {"stack_bytes", std::to_string(o.stack_bytes)},
               {"mode", launch ? "run" : "attach"},
               {"children", follows_children(o, launch)
                                ? "followed (at most " + std::to_string(o.max_processes) + ")"
                                : "not followed"}};
  describe_sources(sources, settings, h.options);
  return h;
}

// The live status line on a terminal (not with -v: it would interleave with the log), and
// the progress line of the phases after the window.
void set_progress_callbacks(PipelineRequest& req, const CaptureOptionsCli& o,
                            FinishProgress& progress, bool live) {
  if (live) {
    const SessionPlan plan = plan_session(req.sources, req.settings);
    const char* what = plan.probes.heap ? "  allocs+waits " : "  waits ";
    if (!plan.probes.block && !plan.probes.mutex) {
      what = "  allocs ";
    }
    const double rate = o.rate;
    req.on_status = [what, rate](const PipelineRequest::Live& l) {
      std::fputs(("\r\033[K" + live_line(l, rate, what)).c_str(), stderr);
    };
  }
  req.on_start = [](pid_t p) { set_forward_pid(p); };
  req.on_phase = [&progress, live](const std::string& what) {
    if (live) {
      std::fputs("\r\033[K", stderr);  // the status line is over
    }
    progress.phase(what);
  };
}

// The files (-o) and the summary on stderr, or the text report on stdout.
void write_results(const Capture& c, const CaptureOptionsCli& o,
                   const std::set<std::string>& formats, const std::optional<OutputDir>& out_dir,
                   const SessionResult& res, const std::string& sample_index,
                   std::unique_ptr<FinishProgress>& progress) {
  progress->phase("writing the reports");
  if (!out_dir) {
    progress.reset();
    print_summary(c, "", {o.top, o.lines, sample_index});
    return;
  }
  const auto files = write_output_dir(c, *out_dir, formats, {o.top, o.lines, sample_index});
  progress.reset();  // its line cleared before the summary
  for (const auto& w : c.warnings) {
    std::cerr << "profctl: note: " << w << "\n";
  }
  CaptureSummary sum;
  sum.samples = res.samples + res.records;
  sum.reused = res.reused;
  sum.lost = res.lost;
  sum.achieved_hz = res.elapsed_s > 0 ? static_cast<double>(res.ticks) / res.elapsed_s : 0.0;
  sum.requested_hz = res.ticks > 0 ? o.rate : 0.0;
  sum.dir = o.output;
  sum.files = files;
  write_capture_summary(c, sum, std::cerr);
}

// run: the program's own exit status. When the capture ended before the program did (-d,
// exec, or profctl was told to stop), it is still our child, so its status is still ours
// to report — unless profctl was told to stop and the program has not exited within the
// grace: profctl ends, the program runs on.
int program_exit_code(pid_t pid, const PipelineResult& run) {
  int st = run.session.exit_status;
  if (run.session.end != SessionResult::End::kTargetExited) {
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

// The exit code (DESIGN "Exit codes"): what the probes left in a target that lives on
// comes first, then run's program status, then attach's "the target is gone".
int exit_code(pid_t pid, bool launch, const PipelineResult& run) {
  const SessionResult& res = run.session;
  if (run.probes && !run.probes->left().empty() && res.end != SessionResult::End::kTargetExited) {
    std::string what;
    for (const auto& l : run.probes->left()) {
      what += (what.empty() ? "" : ", ") + l;
    }
    std::cerr << "profctl: the probes could not be removed completely; left in pid " << pid << ": "
              << what << " (disabled: nothing jumps there)\n";
    if (!launch) {
      return static_cast<int>(ExitCode::kLeftBehind);
    }
  }
  if (launch) {
    return program_exit_code(pid, run);
  }
  return res.end == SessionResult::End::kTargetExited ? static_cast<int>(ExitCode::kTargetGone) : 0;
}

std::unique_ptr<TracedProcess> seize_or_launch(const CaptureOptionsCli& o, bool launch,
                                               bool trace_forks) {
  auto seized = launch ? TracedProcess::launch(o.command, trace_forks)
                       : TracedProcess::seize(parse_pid(o.pid), trace_forks);
  if (auto* err = std::get_if<AttachError>(&seized)) {
    if (launch) {
      throw UserError(ExitCode::kUsage, err->message, err->hint);
    }
    throw_attach_error(*err);
  }
  return std::move(std::get<std::unique_ptr<TracedProcess>>(seized));
}

int run_capture(const CaptureOptionsCli& o, bool launch) {
  apply_logging(o.common);
  PipelineRequest req;
  req.sources = parse_profile_list(o.profiles);
  const std::set<std::string> formats = parse_formats(o.format);
  const HeapOptions heap = resolve_heap_options(o.heap);
  req.settings = settings_of(o, heap, resolve_wait_options(o.waits));
  std::optional<OutputDir> out_dir;
  if (!o.output.empty()) {
    out_dir = prepare_output_dir(o.output);  // before the target is touched: found now
  }
  if (!o.duration.empty()) {
    req.duration_s = parse_duration_s(o.duration);
  }
  // Handlers first: a SIGINT that arrives while modules load must end the capture
  // cleanly (detach, write), not kill profctl with the target seized.
  install_capture_signals(0);
  const std::string start = utc_now_rfc3339();
  req.tree.follow = follows_children(o, launch);
  req.tree.max_processes = o.max_processes;
  std::unique_ptr<TracedProcess> tp = seize_or_launch(o, launch, seizes_new_processes(req));
  const pid_t pid = tp->pid();
  AssembleOptions ao;
  ao.header = header_of(o, launch, pid, start, req.sources, req.settings);

  req.launch = launch;
  req.stack_bytes = o.stack_bytes;
  req.dwfl.debuginfod = o.common.debuginfod;
  req.stop_grace = launch ? kRunStopGrace : std::chrono::milliseconds(0);
  const bool live = isatty(STDERR_FILENO) && o.common.verbose == 0;
  auto progress = std::make_unique<FinishProgress>(isatty(STDERR_FILENO) != 0);
  set_progress_callbacks(req, o, *progress, live);
  PipelineResult run = run_pipeline(std::move(tp), req, stop_requested());
  if (live) {
    std::fprintf(stderr, "\r\033[K");
  }

  progress->phase("symbolizing");
  ao.symbolize.inline_frames = !o.no_inline;
  ao.symbolize.source = !o.no_source;
  ao.settings = req.settings;
  ao.launch = launch;
  ao.max_processes = o.max_processes;
  if (const int sig = last_stop_signal(); sig != 0) {
    ao.stop_signal = signal_name(sig);
  }
  ao.stop_grace = kRunStopGrace;
  const Capture c = assemble_capture(run, ao);
  write_results(c, o, formats, out_dir, run.session, heap.sample_index, progress);
  return exit_code(pid, launch, run);
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
