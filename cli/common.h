// Pieces every subcommand shares: logging flags, the pid argument, the error line.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "attach/traced_process.h"
#include "base/user_error.h"

namespace profctl::cli {

struct CommonOptions {
  int verbose = 0;          // -v: debug, -vv: trace
  std::string log_spec;     // --log attach=debug,unwind=trace
  bool debuginfod = false;  // --debuginfod
};

void add_common_options(CLI::App& app, CommonOptions& opts);
// Applies -v/--log; throws UserError(kUsage) on a malformed --log.
void apply_logging(const CommonOptions& opts);
// Parses a PID argument: a positive decimal number, else UserError(kUsage).
pid_t parse_pid(const std::string& text);
// Turns an AttachError into the UserError that main prints (exit code 2).
[[noreturn]] void throw_attach_error(const AttachError& e);
// "2026-11-24T10:00:00Z" for the current time.
std::string utc_now_rfc3339();

}  // namespace profctl::cli
