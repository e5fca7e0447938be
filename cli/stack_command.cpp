// SPDX-License-Identifier: MIT
#include "cli/stack_command.h"

#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <vector>

#include "attach/proc.h"
#include "attach/traced_process.h"
#include "capture/stack_dump.h"
#include "cli/common.h"
#include "cli/outputs.h"
#include "report/json_writer.h"
#include "report/profile_text.h"
#include "report/stack_text.h"

namespace profctl::cli {
namespace {

struct StackOptions {
  CommonOptions common;
  std::string pid;
  std::string format = "text";
  std::string output;
  std::vector<pid_t> tids;
  bool no_inline = false;
  bool no_source = false;
  bool group = false;
  size_t stack_bytes = 8u << 20;
};

int run_stack(const StackOptions& o) {
  apply_logging(o.common);
  const pid_t pid = parse_pid(o.pid);
  std::optional<OutputFile> out_file;
  if (!o.output.empty()) {
    out_file = prepare_output_file(o.output);  // before the target is touched
  }
  StackDumpRequest r;
  r.header.pid = pid;
  r.header.start = utc_now_rfc3339();
  auto seized = TracedProcess::seize(pid);
  if (auto* err = std::get_if<AttachError>(&seized)) {
    throw_attach_error(*err);
  }
  r.header.exe = read_exe(pid);
  r.header.cmdline = read_cmdline(pid);
  r.header.options = {{"format", o.format},
                      {"stack_bytes", std::to_string(o.stack_bytes)},
                      {"inline", o.no_inline ? "false" : "true"},
                      {"source", o.no_source ? "false" : "true"},
                      {"group", o.group ? "true" : "false"}};
  r.tids.insert(o.tids.begin(), o.tids.end());
  r.stack_bytes = o.stack_bytes;
  r.dwfl.debuginfod = o.common.debuginfod;
  r.symbolize.inline_frames = !o.no_inline;
  r.symbolize.source = !o.no_source;
  r.group = o.group;
  const Capture capture =
      dump_stacks(std::move(std::get<std::unique_ptr<TracedProcess>>(seized)), r);

  std::ostringstream out;
  if (o.format == "json") {
    write_capture_json(capture, out);
  } else if (o.group) {
    // Every group; by line, since a dump is about where each thread is.
    write_profile_text(capture, "threads", out, TextOptions{SIZE_MAX, true, ""});
  } else {
    write_stack_text(capture, out);
  }
  if (out_file) {
    write_output_file(*out_file, out.view());
  } else {
    write_stdout(out.view());
  }
  return 0;
}

}  // namespace

std::function<int()> add_stack_command(CLI::App& app) {
  auto o = std::make_shared<StackOptions>();
  CLI::App* sub =
      app.add_subcommand("stack", "Dump the stack of every thread of a running process");
  sub->add_option("PID", o->pid, "Process id")->required();
  sub->add_option("--format", o->format, "Output format")
      ->check(CLI::IsMember({"text", "json"}))
      ->capture_default_str();
  sub->add_option("-o,--output", o->output, "Write to FILE instead of stdout");
  sub->add_option("--tid", o->tids, "Only this thread (repeatable)")->check(tid_value());
  sub->add_flag("--no-inline", o->no_inline, "Do not expand inlined frames");
  sub->add_flag("--no-source", o->no_source, "Do not look up source file:line");
  sub->add_flag("--group", o->group,
                "Group threads with identical stacks (the 'threads' profile, with their tids)");
  sub->add_option("--stack-bytes", o->stack_bytes,
                  "Most stack bytes copied per thread (K/M suffixes allowed)")
      ->transform(stack_bytes_value())
      ->capture_default_str();
  add_common_options(*sub, o->common);
  return [sub, o]() -> int {
    if (!sub->parsed()) {
      return -1;
    }
    return run_stack(*o);
  };
}

}  // namespace profctl::cli
