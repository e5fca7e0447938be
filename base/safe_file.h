// SPDX-License-Identifier: MIT
// Output files a hostile directory cannot redirect (DESIGN "Output"). profctl often runs as
// root and writes where it is told, maybe into a directory another user owns: a symlink
// planted there at `capture.json` must not turn the write into one of /etc/shadow, and a
// name read from a capture file must not leave the directory.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>
#include <string_view>

#include "base/fd.h"
#include "base/result.h"

namespace profctl {

// True when `name` can be used as it is as the stem of a file name in an output directory:
// 1 to 64 characters of [A-Za-z0-9_.-], the first not '.' or '-' (no "..", no hidden file,
// nothing a command line takes for an option). Profile kinds come from capture files, which
// are untrusted: a kind becomes a file name only if this holds.
bool is_safe_file_stem(std::string_view name);

// `text` for a one-line message: at most 64 bytes, anything but printable ASCII as \xNN.
std::string printable_name(std::string_view text);

// A directory, opened once, where output files are created by name relative to the fd.
//
// The path is walked one component at a time, never following a symlink owned by anyone
// but root or the effective user: another user could point it anywhere, even when it is
// DIR itself (the kernel's fs.protected_symlinks guards only sticky world-writable
// directories, and is often off). A symlink of root or of the user is followed as if its
// target had been typed.
class OutputDir {
 public:
  // Opens the directory at `path`; with `create`, missing components are made (mode 0755
  // less the umask), as mkdir -p. An error names the component at fault.
  static Result<OutputDir> open(const std::string& path, bool create);

  // The path as given, for messages and for naming the files written.
  const std::string& path() const { return path_; }
  // "path/name".
  std::string path_of(std::string_view name) const;

  // Writes `data` as `name` (a plain name, no '/'): a new temporary file in the directory,
  // made with O_CREAT|O_EXCL|O_NOFOLLOW (so nothing existing is ever opened), is written,
  // closed (errors checked) and renamed to `name`. rename(2) replaces the entry itself: a
  // symlink there is replaced, never followed, and an existing file's inode is never
  // written (its other hard links keep their content). A directory at `name` fails
  // (EISDIR). On failure the temporary is removed. Not fsynced: the outputs are as durable
  // as any compiler's, and a rename never exposes a half-written file.
  Result<void> write_file(std::string_view name, std::string_view data) const;

  // Creates, writes, closes and removes a temporary file: proves, before a capture, that
  // the directory takes files (permission bits say little as root or on a read-only mount).
  Result<void> test_write() const;

  // The entry `name` itself (lstat, not followed): nullopt when there is none.
  Result<std::optional<struct stat>> entry(std::string_view name) const;

 private:
  OutputDir(Fd fd, std::string path) : fd_(std::move(fd)), path_(std::move(path)) {}
  // Creates and writes a temporary file; returns its name, for the caller to rename or
  // remove. Errors name `for_name`, the file it stands for (empty: the directory).
  Result<std::string> write_temporary(std::string_view for_name, std::string_view data) const;
  std::string describe(std::string_view for_name) const;

  Fd fd_;
  std::string path_;
};

// The directory part and the file name of `path` for a single output file (`stack -o FILE`):
// "a/b/c" -> {"a/b", "c"}, "c" -> {".", "c"}, "/c" -> {"/", "c"}. The name is empty when the
// path ends in '/' (or is empty): the caller reports that it names a directory.
struct SplitPath {
  std::string dir;
  std::string name;
};
SplitPath split_file_path(const std::string& path);

}  // namespace profctl
