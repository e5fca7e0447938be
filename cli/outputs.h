// SPDX-License-Identifier: MIT
// Writing a finished Capture: the files of -o DIR, or a summary on stdout.
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "report/capture.h"
#include "report/profile_text.h"

namespace profctl::cli {

// Checks, before anything is attached, that `dir` (-o DIR) can take the outputs: creates it
// and its missing parents, then creates, writes and removes a probe file in it, so that a
// regular file, a read-only or full filesystem or a permission problem is found at once
// rather than after the capture. Throws UserError(kUsage) naming the path and the errno.
void prepare_output_dir(const std::string& dir);

// The same for `stack -o FILE`: the file is created (truncated) now, written at the end.
void prepare_output_file(const std::string& path);

// Writes `data` to `path` (created or truncated), checking every write and the close.
// Throws UserError(kUsage) naming the path and the errno.
void write_output_file(const std::string& path, const std::string& data);

// Writes `data` to standard output (fd 1, after anything std::cout still buffers), checking
// every write: a failure says which errno (a full disk, /dev/full) as UserError(kUsage).
void write_stdout(std::string_view data);

// Flushes std::cout and stdout: output still in a buffer is written (and can fail, e.g. on
// a full disk or /dev/full) only here, so a command's results are not complete before.
// Throws UserError(kUsage) with the errno when a write to standard output failed.
void flush_stdout();

// Formats named by --format: json, pprof, text, folded, flamegraph (alias html), and "all".
std::set<std::string> parse_formats(const std::string& list);

// Writes DIR/capture.json (with "json") and DIR/<kind>.{pb.gz,txt,folded,html} for every
// profile in the capture. `text` says how text and folded files group frames (by function,
// or by line) and, for the heap profile, which sample type ranks the text and fills the
// folded values. Throws UserError(kUsage) when a file cannot be written.
// Returns the paths written, in order.
std::vector<std::string> write_output_dir(const Capture& c, const std::string& dir,
                                          const std::set<std::string>& formats,
                                          const TextOptions& text);

// The human summary: top stacks of each profile (or of one kind).
void print_summary(const Capture& c, const std::string& only_kind, const TextOptions& text);

}  // namespace profctl::cli
