// SPDX-License-Identifier: MIT
#include "cli/diff_command.h"

#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>

#include "cli/common.h"
#include "cli/heap_options.h"
#include "cli/outputs.h"
#include "report/diff_output.h"
#include "report/fail_if.h"
#include "report/json_reader.h"
#include "report/pprof_writer.h"
#include "report/profile_diff.h"

namespace profctl::cli {
namespace {

struct DiffCliOptions {
  CommonOptions common;
  std::string base;
  std::string now;
  std::string format = "text";
  std::string output;
  std::vector<std::string> fail_if;
  bool no_normalize = false;
  bool any_target = false;
  size_t top = 10;
  bool lines = false;
  std::string sample_index = "inuse_space";
};

Capture load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw UserError(ExitCode::kUsage, "cannot open " + path, "give the path of a capture.json");
  }
  auto c = read_capture_json(in);
  if (!c) {
    throw UserError(ExitCode::kUsage, path + ": " + c.error().message());
  }
  return std::move(*c);
}

std::string base_name(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// Two captures of different programs (or formats) make a diff of nothing in common: said
// at once, in one line, rather than a report of every function as new.
void check_comparable(const DiffCliOptions& o, const Capture& base, const Capture& now) {
  if (base.schema != now.schema) {
    throw UserError(
        ExitCode::kUsage,
        "the captures have different schemas (" + base.schema + " and " + now.schema + ")",
        "re-render the older one with this profctl: profctl report FILE -o DIR");
  }
  // By file name: two builds of one program usually live in two directories.
  if (!o.any_target && base_name(base.target.exe) != base_name(now.target.exe)) {
    throw UserError(ExitCode::kUsage,
                    "the captures are of different programs (" + base.target.exe + " and " +
                        now.target.exe + ")",
                    "add --any-target to compare them anyway");
  }
}

std::string format_choice(const std::string& f) {
  if (f != "text" && f != "json") {
    throw UserError(ExitCode::kUsage, "unknown diff format '" + f + "'", "use text or json");
  }
  return f;
}

int run_diff(const DiffCliOptions& o) {
  apply_logging(o.common);
  const std::string format = format_choice(o.format);
  const std::string& sample_index = check_sample_index(o.sample_index);
  // Gates first: a typo in one is found before two files are read.
  std::vector<Gate> gates;
  for (const std::string& text : o.fail_if) {
    auto g = parse_gate(text);
    if (!g) {
      throw UserError(ExitCode::kUsage, g.error().message());
    }
    gates.push_back(std::move(*g));
  }
  std::optional<OutputDir> out_dir;
  if (!o.output.empty()) {
    out_dir = prepare_output_dir(o.output);
  }
  const Capture base = load(o.base);
  const Capture now = load(o.now);
  check_comparable(o, base, now);
  const CaptureDiff diff = diff_captures(base, now, {!o.no_normalize, o.lines}, sample_index);

  std::vector<GateOutcome> outcomes;
  for (const Gate& g : gates) {
    auto r = evaluate_gate(g, diff);
    if (!r) {
      throw UserError(ExitCode::kUsage, r.error().message());
    }
    outcomes.push_back({g, std::move(*r)});
  }
  const DiffSide base_side{o.base, &base};
  const DiffSide now_side{o.now, &now};
  std::ostringstream text;
  std::ostringstream json;
  write_diff_text(diff, base_side, now_side, outcomes, o.top, text);
  write_diff_json(diff, base_side, now_side, outcomes, PROFCTL_VERSION, json);
  if (out_dir) {
    // Kinds from the captures name files: every one checked before the first is written.
    std::vector<std::string> kinds;
    for (const KindDiff& k : diff.kinds) {
      kinds.push_back(k.kind);
    }
    check_kinds_are_file_names(kinds);
    write_output_file(*out_dir, "diff.txt", text.str());
    write_output_file(*out_dir, "diff.json", json.str());
    // The pair `go tool pprof -diff_base DIR/K.base.pb.gz DIR/K.new.pb.gz` reads: the base
    // scaled as the diff scaled it.
    const Capture scaled = scaled_base(base, now, !o.no_normalize);
    for (const KindDiff& k : diff.kinds) {
      for (const auto& [file, capture] :
           {std::pair{k.kind + ".base.pb.gz", &scaled}, std::pair{k.kind + ".new.pb.gz", &now}}) {
        std::ostringstream pb;
        if (auto r = write_pprof(*capture, k.kind, pb); !r) {
          throw UserError(ExitCode::kInternal, "pprof " + k.kind + ": " + r.error().message());
        }
        write_output_file(*out_dir, file, pb.str());
      }
    }
  }
  write_stdout(format == "json" ? json.view() : text.view());
  bool crossed = false;
  for (const GateOutcome& g : outcomes) {
    if (g.result.crossed) {
      flush_stdout();
      std::cerr << "profctl: regression: " << g.result.message << '\n';
      crossed = true;
    }
  }
  return static_cast<int>(crossed ? ExitCode::kRegression : ExitCode::kOk);
}

}  // namespace

std::function<int()> add_diff_command(CLI::App& app) {
  auto o = std::make_shared<DiffCliOptions>();
  CLI::App* sub = app.add_subcommand(
      "diff", "Compare two captures (per function and stack); --fail-if gates a CI job on it");
  sub->add_option("BASE", o->base, "capture.json of the baseline")->required();
  sub->add_option("NEW", o->now, "capture.json to compare with it")->required();
  sub->add_option("--format", o->format, "What goes to stdout: text or json")
      ->capture_default_str();
  sub->add_option("-o,--output", o->output,
                  "Also write DIR/diff.txt, DIR/diff.json and DIR/KIND.{base,new}.pb.gz");
  sub->add_option("--fail-if", o->fail_if,
                  "Exit 5 when a change crosses a threshold, e.g. 'cpu:FUNCTION>+10%' "
                  "(repeatable)");
  sub->add_flag("--no-normalize", o->no_normalize,
                "Compare raw totals, not scaled to the new capture's window");
  sub->add_flag("--any-target", o->any_target, "Compare captures of different programs");
  sub->add_option("--top", o->top, "Functions and stacks per list in text output")
      ->check(top_value())
      ->capture_default_str();
  sub->add_flag("--lines", o->lines, "Compare by function and source line, not by function");
  add_sample_index_option(*sub, o->sample_index);
  add_common_options(*sub, o->common);
  return [sub, o]() -> int { return sub->parsed() ? run_diff(*o) : -1; };
}

}  // namespace profctl::cli
