// Writing a finished Capture: the files of -o DIR, or a summary on stdout.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "report/capture.h"
#include "report/profile_text.h"

namespace profctl::cli {

// Formats named by --format: json, pprof, text, folded (and "all").
std::set<std::string> parse_formats(const std::string& list);

// Writes DIR/capture.json (with "json") and DIR/<kind>.{pb.gz,txt,folded} for every
// profile in the capture. Throws UserError when a file cannot be written.
// `text` says how text and folded files group frames (by function, or by line).
void write_output_dir(const Capture& c, const std::string& dir,
                      const std::set<std::string>& formats, const TextOptions& text);

// The human summary: top stacks of each profile (or of one kind).
void print_summary(const Capture& c, const std::string& only_kind, const TextOptions& text);

}  // namespace profctl::cli
