// SPDX-License-Identifier: MIT
// profctl stack PID: the one-shot all-thread dump (Go's debug=2 goroutine dump, for threads).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace profctl::cli {

// Adds the `stack` subcommand; the returned function runs it and returns the exit code.
std::function<int()> add_stack_command(CLI::App& app);

}  // namespace profctl::cli
