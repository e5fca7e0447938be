// Writing a finished Capture: the files of -o DIR, or a summary on stdout.
#pragma once

#include <set>
#include <string>
#include <vector>

#include "report/capture.h"

namespace profctl::cli {

// Formats named by --format: json, pprof, text, folded (and "all").
std::set<std::string> parse_formats(const std::string& list);

// Writes DIR/capture.json (with "json") and DIR/<kind>.{pb.gz,txt,folded} for every
// profile in the capture. `sample_index` names the sample type of the folded values and of
// the text ranking where a profile has it (the heap profile's --sample-index); elsewhere,
// or when empty, each profile's default. Throws UserError when a file cannot be written.
void write_output_dir(const Capture& c, const std::string& dir,
                      const std::set<std::string>& formats, size_t top_n,
                      const std::string& sample_index = {});

// The human summary: top stacks of each profile (or of one kind).
void print_summary(const Capture& c, const std::string& only_kind, size_t top_n,
                   const std::string& sample_index = {});

}  // namespace profctl::cli
