// SPDX-License-Identifier: MIT
#include "cli/outputs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <sstream>
#include <string_view>

#include "base/fd.h"
#include "base/user_error.h"
#include "report/flamegraph_writer.h"
#include "report/folded_writer.h"
#include "report/json_writer.h"
#include "report/pprof_writer.h"
#include "report/profile_text.h"
#include "report/stack_text.h"

namespace profctl::cli {
namespace {

[[noreturn]] void throw_write_error(const std::string& what, int err) {
  throw UserError(ExitCode::kUsage, what + ": " + std::strerror(err),
                  "check the path, its permissions and free space");
}

// `what`: the path, or "to standard output", for the message.
void write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      throw_write_error("cannot write " + what, n < 0 ? errno : EIO);
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
}

// An errno-less error of OutputDir::open is its refusal of another user's symlink.
[[noreturn]] void throw_error(const Error& e) {
  throw UserError(ExitCode::kUsage, e.message(),
                  e.err != 0 ? "check the path, its permissions and free space"
                             : "give a path that goes through no other user's symlink");
}

// The folded value: --sample-index where the profile has that type, else the profile's
// default type (heap: inuse_space), else the first (samples for cpu and wall).
size_t folded_index(const Profile& p, const std::string& sample_index) {
  return find_sample_type(p, sample_index).value_or(find_sample_type(p, "").value_or(0));
}

}  // namespace

OutputDir prepare_output_dir(const std::string& dir) {
  auto d = OutputDir::open(dir, true);
  if (!d) {
    throw_error(d.error());
  }
  if (auto r = d->test_write(); !r) {
    throw_error(r.error());
  }
  return std::move(*d);
}

OutputFile prepare_output_file(const std::string& path) {
  const SplitPath split = split_file_path(path);
  if (split.name.empty() || split.name == "." || split.name == "..") {
    throw_write_error("cannot write " + path, EISDIR);
  }
  auto d = OutputDir::open(split.dir, false);
  if (!d) {
    throw_error(d.error());
  }
  auto st = d->entry(split.name);
  if (!st) {
    throw_error(st.error());
  }
  if (st->has_value()) {
    const mode_t mode = (*st)->st_mode;
    if (S_ISDIR(mode)) {
      throw_write_error("cannot write " + path, EISDIR);
    }
    if (S_ISLNK(mode)) {
      throw UserError(ExitCode::kUsage,
                      "refusing to write " + path +
                          ": it is a symlink, and profctl replaces its output files rather "
                          "than writing through a link",
                      "give the real path of the file, or leave out -o to write to stdout");
    }
    if (!S_ISREG(mode)) {
      throw UserError(
          ExitCode::kUsage,
          "refusing to write " + path + ": it is not a regular file (profctl would replace it)",
          "give the path of a regular file, or leave out -o to write to stdout");
    }
  }
  if (auto r = d->test_write(); !r) {
    throw_error(r.error());
  }
  return OutputFile{std::move(*d), split.name};
}

void write_output_file(const OutputDir& dir, const std::string& name, std::string_view data) {
  if (auto r = dir.write_file(name, data); !r) {
    throw_error(r.error());
  }
}

void write_output_file(const OutputFile& file, std::string_view data) {
  write_output_file(file.dir, file.name, data);
}

void check_kinds_are_file_names(const std::vector<std::string>& kinds) {
  for (const std::string& kind : kinds) {
    if (!is_safe_file_stem(kind)) {
      throw UserError(ExitCode::kUsage,
                      "the profile kind '" + printable_name(kind) +
                          "' cannot be a file name, so it is not written",
                      "profctl's kinds are plain words (cpu, heap, ...): the capture was "
                      "altered or is not profctl's");
    }
  }
}

void write_stdout(std::string_view data) {
  flush_stdout();
  // Not through stdio: a FILE buffer reports a failed write later, and without its errno.
  write_all(STDOUT_FILENO, data, "to standard output");
}

void flush_stdout() {
  std::cout.flush();
  errno = 0;
  const bool ok = std::cout.good() && std::fflush(stdout) == 0 && !std::ferror(stdout);
  if (!ok) {
    const int err = errno != 0 ? errno : EIO;
    std::clearerr(stdout);
    throw UserError(ExitCode::kUsage,
                    std::string("cannot write to standard output: ") + std::strerror(err),
                    "the output is incomplete; check where stdout goes (a full disk?)");
  }
}

std::set<std::string> parse_formats(const std::string& list) {
  std::set<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "all") {
      out.insert({"json", "pprof", "text", "folded", "flamegraph"});
    } else if (item == "txt") {
      out.insert("text");
    } else if (item == "html") {
      out.insert("flamegraph");
    } else if (item == "json" || item == "pprof" || item == "text" || item == "folded" ||
               item == "flamegraph") {
      out.insert(item);
    } else if (!item.empty()) {
      throw UserError(ExitCode::kUsage, "unknown format '" + item + "'",
                      "use a comma-separated list of json, pprof, text, folded, flamegraph");
    }
  }
  if (out.empty()) {
    throw UserError(ExitCode::kUsage, "--format is empty",
                    "use json, pprof, text, folded, flamegraph");
  }
  return out;
}

std::vector<std::string> write_output_dir(const Capture& c, const OutputDir& dir,
                                          const std::set<std::string>& formats,
                                          const TextOptions& text) {
  std::vector<std::string> kinds;
  for (const auto& [kind, p] : c.profiles) {
    kinds.push_back(kind);
  }
  check_kinds_are_file_names(kinds);  // before any file: nothing half written
  std::vector<std::string> written;
  auto put = [&written, &dir](const std::string& name, const std::string& data) {
    write_output_file(dir, name, data);
    written.push_back(dir.path_of(name));
  };
  if (formats.count("json")) {
    std::ostringstream os;
    write_capture_json(c, os);
    put("capture.json", os.str());
  }
  for (const auto& [kind, p] : c.profiles) {
    if (formats.count("pprof")) {
      std::ostringstream os;
      if (auto r = write_pprof(c, kind, os); !r) {
        throw UserError(ExitCode::kInternal, "pprof " + kind + ": " + r.error().message());
      }
      put(kind + ".pb.gz", os.str());
    }
    if (formats.count("text")) {
      std::ostringstream os;
      write_profile_text(c, kind, os, text);
      put(kind + ".txt", os.str());
    }
    if (formats.count("folded")) {
      std::ostringstream os;
      write_folded(c, kind, os, folded_index(p, text.sample_index), text.lines);
      put(kind + ".folded", os.str());
    }
    if (formats.count("flamegraph")) {
      std::ostringstream os;
      write_flamegraph(c, kind, os, {text.lines, text.sample_index});
      put(kind + ".html", os.str());
    }
  }
  if (formats.count("text") && !c.threads.empty()) {
    std::ostringstream os;
    write_stack_text(c, os);
    put("stacks.txt", os.str());
  }
  return written;
}

void print_summary(const Capture& c, const std::string& only_kind, const TextOptions& text) {
  std::ostringstream out;
  bool any = false;
  for (const auto& [kind, p] : c.profiles) {
    if (!only_kind.empty() && kind != only_kind) {
      continue;
    }
    if (any) {
      out << "\n";
    }
    write_profile_text(c, kind, out, text);
    any = true;
  }
  if (!only_kind.empty() && !any) {
    throw UserError(
        ExitCode::kUsage, "the capture has no '" + only_kind + "' profile",
        "profiles in it: " + [&] {
          std::string s;
          for (auto& [k, p] : c.profiles) {
            s += (s.empty() ? "" : ",") + k;
          }
          return s.empty() ? std::string("none") : s;
        }());
  }
  if (!any && !c.threads.empty()) {
    write_stack_text(c, out);
  }
  write_stdout(out.view());
  for (const auto& w : c.warnings) {
    std::cerr << "profctl: note: " << w << "\n";
  }
}

}  // namespace profctl::cli
