// SPDX-License-Identifier: MIT
#include "cli/report_command.h"

#include <fstream>
#include <optional>
#include <sstream>

#include "cli/common.h"
#include "cli/heap_options.h"
#include "cli/outputs.h"
#include "report/flamegraph_writer.h"
#include "report/json_reader.h"

namespace profctl::cli {
namespace {

struct ReportOptions {
  CommonOptions common;
  std::string path;
  std::string profile;
  std::string format = "text";
  std::string output;
  size_t top = 10;
  std::string sample_index = "inuse_space";
  bool lines = false;
};

int run_report(const ReportOptions& o) {
  apply_logging(o.common);
  const std::string& sample_index = check_sample_index(o.sample_index);
  std::optional<OutputDir> out_dir;
  if (!o.output.empty()) {
    out_dir = prepare_output_dir(o.output);
  }
  std::ifstream in(o.path, std::ios::binary);
  if (!in) {
    throw UserError(ExitCode::kUsage, "cannot open " + o.path, "give the path of a capture.json");
  }
  auto c = read_capture_json(in);
  if (!c) {
    throw UserError(ExitCode::kUsage, o.path + ": " + c.error().message());
  }
  if (!o.profile.empty()) {
    auto it = c->profiles.find(o.profile);
    if (it == c->profiles.end()) {
      print_summary(*c, o.profile, {o.top, o.lines, sample_index});  // throws: lists the profiles
    }
    Profile keep = it->second;
    c->profiles.clear();
    c->profiles[o.profile] = std::move(keep);
  }
  const std::set<std::string> formats = parse_formats(o.format);
  if (out_dir) {
    write_output_dir(*c, *out_dir, formats, {o.top, o.lines, sample_index});
  } else if (formats.count("flamegraph")) {
    // One page on stdout: a page per profile needs a directory.
    if (c->profiles.size() != 1) {
      std::string kinds;
      for (const auto& [kind, p] : c->profiles) {
        kinds += (kinds.empty() ? "" : ",") + kind;
      }
      throw UserError(ExitCode::kUsage,
                      "--format flamegraph on stdout draws one profile; the capture has " +
                          (kinds.empty() ? std::string("none") : kinds),
                      "pick one with --profile KIND, or write one page each with -o DIR");
    }
    std::ostringstream page;
    write_flamegraph(*c, c->profiles.begin()->first, page, {o.lines, sample_index});
    write_stdout(page.view());
  } else {
    print_summary(*c, o.profile, {o.top, o.lines, sample_index});
  }
  return 0;
}

}  // namespace

std::function<int()> add_report_command(CLI::App& app) {
  auto o = std::make_shared<ReportOptions>();
  CLI::App* sub = app.add_subcommand("report", "Re-render a saved capture.json");
  sub->add_option("CAPTURE", o->path, "capture.json written by profctl attach/run -o")->required();
  sub->add_option("--profile", o->profile, "Only this profile kind");
  sub->add_option(
         "--format", o->format,
         "With -o: json,pprof,text,folded,flamegraph or all; flamegraph alone: HTML on stdout")
      ->capture_default_str();
  sub->add_option("-o,--output", o->output, "Write files to DIR instead of text on stdout");
  sub->add_option("--top", o->top, "Stacks per profile in text output")
      ->check(top_value())
      ->capture_default_str();
  sub->add_flag("--lines", o->lines,
                "Text and folded output: group by source line, not by function");
  add_sample_index_option(*sub, o->sample_index);
  add_common_options(*sub, o->common);
  return [sub, o]() -> int { return sub->parsed() ? run_report(*o) : -1; };
}

}  // namespace profctl::cli
