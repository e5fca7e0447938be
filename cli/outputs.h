// SPDX-License-Identifier: MIT
// Writing a finished Capture: the files of -o DIR, or a summary on stdout.
#pragma once

#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "base/safe_file.h"
#include "report/capture.h"
#include "report/profile_text.h"

namespace profctl::cli {

// Every output file is written through base/safe_file.h (DESIGN "Output"): in a directory
// opened once, as a new temporary renamed over the name, so a symlink or another user's file
// at the name is replaced, never followed or written into.

// Opens `dir` (-o DIR) before anything is attached, creating it and its missing parents,
// and creates, writes and removes a temporary file in it, so that a regular file, a
// read-only or full filesystem, a permission problem or a symlink of another user on the
// way is found at once rather than after the capture. Throws UserError(kUsage) naming the
// path and the errno. The files are later written into the directory this opened, even if
// the path is changed meanwhile.
OutputDir prepare_output_dir(const std::string& dir);

// The target of `stack -o FILE`: FILE's directory, opened once, and its name in it.
struct OutputFile {
  OutputDir dir;
  std::string name;
};

// The same for `stack -o FILE`: FILE's directory must exist and take files, and FILE must
// be absent or a regular file (a symlink is refused: it would be replaced, not written
// through, which is not what its owner meant; a device such as /dev/null would be replaced
// too). Nothing is created at FILE until the end.
OutputFile prepare_output_file(const std::string& path);

// Writes `data` as `name` in `dir` / as the prepared file. Throws UserError(kUsage) naming
// the path and the errno.
void write_output_file(const OutputDir& dir, const std::string& name, std::string_view data);
void write_output_file(const OutputFile& file, std::string_view data);

// Profile kinds become file names (`KIND.txt`): throws UserError(kUsage) naming the first
// kind that is not a safe file stem (base/safe_file.h). A capture file is untrusted, and
// `report`/`diff` must never write outside -o.
void check_kinds_are_file_names(const std::vector<std::string>& kinds);

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
// folded values. Throws UserError(kUsage) when a file cannot be written or a kind cannot
// be a file name (checked before anything is written). Returns the paths written, in order.
std::vector<std::string> write_output_dir(const Capture& c, const OutputDir& dir,
                                          const std::set<std::string>& formats,
                                          const TextOptions& text);

// The human summary: top stacks of each profile (or of one kind).
void print_summary(const Capture& c, const std::string& only_kind, const TextOptions& text);

}  // namespace profctl::cli
