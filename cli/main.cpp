// SPDX-License-Identifier: MIT
// profctl: parse the command line, run one subcommand, map errors to exit codes
// (docs/DESIGN.md "Exit codes").
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <functional>
#include <iostream>
#include <vector>

#include "attach/waiter.h"
#include "base/user_error.h"
#include "cli/capture_command.h"
#include "cli/diff_command.h"
#include "cli/outputs.h"
#include "cli/report_command.h"
#include "cli/stack_command.h"

namespace {

void print_error(const std::string& message, const std::string& hint) {
  // One line: what went wrong, then what to do.
  std::string line = "profctl: " + message;
  if (!hint.empty()) {
    line += "; " + hint;
  }
  std::fprintf(stderr, "%s\n", line.c_str());
}

}  // namespace

int run_main(int argc, char** argv) {
  using profctl::ExitCode;
  CLI::App app{"profctl: profiles for native Linux processes, attached from outside with ptrace"};
  app.set_version_flag("--version", PROFCTL_VERSION);
  app.require_subcommand(1);
  std::vector<std::function<int()>> commands;
  commands.push_back(profctl::cli::add_stack_command(app));
  commands.push_back(profctl::cli::add_attach_command(app));
  commands.push_back(profctl::cli::add_run_command(app));
  commands.push_back(profctl::cli::add_report_command(app));
  commands.push_back(profctl::cli::add_diff_command(app));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    print_error(e.what(), "see profctl --help");
    return static_cast<int>(ExitCode::kUsage);
  }

  try {
    for (auto& run : commands) {
      int rc = run();
      if (rc >= 0) {
        // Results still buffered for stdout are written now: a failure here (a full disk,
        // /dev/full) is an error even when the command itself succeeded.
        profctl::cli::flush_stdout();
        return rc;
      }
    }
    print_error("no command given", "see profctl --help");
    return static_cast<int>(ExitCode::kUsage);
  } catch (const profctl::UserError& e) {
    // Everything that touched the target was restored and detached by RAII on the way here.
    print_error(e.what(), e.hint());
    return e.exit_code();
  } catch (const std::exception& e) {
    print_error(std::string("internal error: ") + e.what(),
                "the target was detached; please report this");
    return static_cast<int>(ExitCode::kInternal);
  }
}

int main(int argc, char** argv) {
  // Tracee stops are waited for with sigtimedwait(SIGCHLD) (attach/waiter.h): block it
  // before any thread starts so every thread inherits the mask and none discards it.
  profctl::Waiter::block_sigchld();
  // Sampling keeps a few files open per thread of the target (its /proc files, its CPU clock):
  // the usual soft limit of 1024 ran out near 300 threads. The hard limit is the user's to
  // set; the soft one is raised to it (profctl uses poll, never select's fixed-size sets).
  if (rlimit nofile{};
      getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    (void)setrlimit(RLIMIT_NOFILE, &nofile);
  }
  try {
    return run_main(argc, argv);
  } catch (...) {
    std::fprintf(stderr, "profctl: internal error while starting up\n");
    return static_cast<int>(profctl::ExitCode::kInternal);
  }
}
