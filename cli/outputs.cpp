#include "cli/outputs.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "base/user_error.h"
#include "report/folded_writer.h"
#include "report/json_writer.h"
#include "report/pprof_writer.h"
#include "report/profile_text.h"
#include "report/stack_text.h"

namespace profctl::cli {
namespace {

void write_file(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::out | std::ios::trunc | std::ios::binary);
  f << data;
  f.close();
  if (!f) {
    throw UserError(ExitCode::kInternal, "cannot write " + path, "check space and permissions");
  }
}

}  // namespace

std::set<std::string> parse_formats(const std::string& list) {
  std::set<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item == "all") {
      out.insert({"json", "pprof", "text", "folded"});
    } else if (item == "txt") {
      out.insert("text");
    } else if (item == "json" || item == "pprof" || item == "text" || item == "folded") {
      out.insert(item);
    } else if (!item.empty()) {
      throw UserError(ExitCode::kUsage, "unknown format '" + item + "'",
                      "use a comma-separated list of json, pprof, text, folded");
    }
  }
  if (out.empty()) {
    throw UserError(ExitCode::kUsage, "--format is empty", "use json, pprof, text, folded");
  }
  return out;
}

void write_output_dir(const Capture& c, const std::string& dir,
                      const std::set<std::string>& formats, const TextOptions& text) {
  if (mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    throw UserError(ExitCode::kInternal, "cannot create " + dir + ": " + std::strerror(errno),
                    "check the parent directory");
  }
  if (formats.count("json")) {
    std::ostringstream os;
    write_capture_json(c, os);
    write_file(dir + "/capture.json", os.str());
  }
  for (const auto& [kind, p] : c.profiles) {
    if (formats.count("pprof")) {
      std::ostringstream os;
      if (auto r = write_pprof(c, kind, os); !r) {
        throw UserError(ExitCode::kInternal, "pprof " + kind + ": " + r.error().message());
      }
      write_file(dir + "/" + kind + ".pb.gz", os.str());
    }
    if (formats.count("text")) {
      std::ostringstream os;
      write_profile_text(c, kind, os, text);
      write_file(dir + "/" + kind + ".txt", os.str());
    }
    if (formats.count("folded")) {
      std::ostringstream os;
      write_folded(c, kind, os, 0, text.lines);
      write_file(dir + "/" + kind + ".folded", os.str());
    }
  }
  if (formats.count("text") && !c.threads.empty()) {
    std::ostringstream os;
    write_stack_text(c, os);
    write_file(dir + "/stacks.txt", os.str());
  }
}

void print_summary(const Capture& c, const std::string& only_kind, const TextOptions& text) {
  bool any = false;
  for (const auto& [kind, p] : c.profiles) {
    if (!only_kind.empty() && kind != only_kind) {
      continue;
    }
    if (any) {
      std::cout << "\n";
    }
    write_profile_text(c, kind, std::cout, text);
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
    write_stack_text(c, std::cout);
  }
  for (const auto& w : c.warnings) {
    std::cerr << "profctl: note: " << w << "\n";
  }
}

}  // namespace profctl::cli
