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

// Creates `path` (or truncates it), 0644 less the umask.
Fd create_file(const std::string& path, int extra_flags) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | extra_flags, 0644));
  if (!fd.valid()) {
    throw_write_error("cannot create " + path, errno);
  }
  return fd;
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

// close(2) is where some filesystems (NFS, a full quota) report a failed write.
void close_checked(Fd& fd, const std::string& path) {
  if (Result<void> r = fd.close(); !r) {
    throw UserError(ExitCode::kUsage, "cannot write " + path + ": " + r.error().message(),
                    "check the path, its permissions and free space");
  }
}

// mkdir -p: each missing component in turn; an existing non-directory is ENOTDIR.
void make_dirs(const std::string& dir) {
  for (size_t slash = dir.find('/', 1);; slash = dir.find('/', slash + 1)) {
    const std::string part = dir.substr(0, slash);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) {
      throw_write_error("cannot create the output directory " + part, errno);
    }
    if (slash == std::string::npos) {
      break;
    }
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    throw_write_error("cannot use the output directory " + dir, errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    throw_write_error("cannot use " + dir + " as the output directory", ENOTDIR);
  }
}

// The folded value: --sample-index where the profile has that type, else the profile's
// default type (heap: inuse_space), else the first (samples for cpu and wall).
size_t folded_index(const Profile& p, const std::string& sample_index) {
  return find_sample_type(p, sample_index).value_or(find_sample_type(p, "").value_or(0));
}

}  // namespace

void prepare_output_dir(const std::string& dir) {
  make_dirs(dir);
  // Permission bits say little as root or on a read-only mount: only a real file tells.
  const std::string probe = dir + "/.profctl-probe-" + std::to_string(::getpid());
  Fd fd = create_file(probe, O_EXCL);
  try {
    write_all(fd.get(), "probe\n", probe);
    close_checked(fd, probe);
  } catch (...) {
    ::unlink(probe.c_str());
    throw;
  }
  if (::unlink(probe.c_str()) != 0) {
    throw_write_error("cannot remove " + probe, errno);
  }
}

void prepare_output_file(const std::string& path) {
  Fd fd = create_file(path, O_TRUNC);
  close_checked(fd, path);
}

void write_output_file(const std::string& path, const std::string& data) {
  Fd fd = create_file(path, O_TRUNC);
  write_all(fd.get(), data, path);
  close_checked(fd, path);
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

std::vector<std::string> write_output_dir(const Capture& c, const std::string& dir,
                                          const std::set<std::string>& formats,
                                          const TextOptions& text) {
  std::vector<std::string> written;
  auto put = [&written](const std::string& path, const std::string& data) {
    write_output_file(path, data);
    written.push_back(path);
  };
  make_dirs(dir);
  if (formats.count("json")) {
    std::ostringstream os;
    write_capture_json(c, os);
    put(dir + "/capture.json", os.str());
  }
  for (const auto& [kind, p] : c.profiles) {
    if (formats.count("pprof")) {
      std::ostringstream os;
      if (auto r = write_pprof(c, kind, os); !r) {
        throw UserError(ExitCode::kInternal, "pprof " + kind + ": " + r.error().message());
      }
      put(dir + "/" + kind + ".pb.gz", os.str());
    }
    if (formats.count("text")) {
      std::ostringstream os;
      write_profile_text(c, kind, os, text);
      put(dir + "/" + kind + ".txt", os.str());
    }
    if (formats.count("folded")) {
      std::ostringstream os;
      write_folded(c, kind, os, folded_index(p, text.sample_index), text.lines);
      put(dir + "/" + kind + ".folded", os.str());
    }
    if (formats.count("flamegraph")) {
      std::ostringstream os;
      write_flamegraph(c, kind, os, {text.lines, text.sample_index});
      put(dir + "/" + kind + ".html", os.str());
    }
  }
  if (formats.count("text") && !c.threads.empty()) {
    std::ostringstream os;
    write_stack_text(c, os);
    put(dir + "/stacks.txt", os.str());
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
