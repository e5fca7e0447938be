// SPDX-License-Identifier: MIT
// profctl attach PID / profctl run -- CMD: a sampling capture (cpu, wall, threadcreate,
// threads) written as capture.json, pprof, text and folded files.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace profctl::cli {

std::function<int()> add_attach_command(CLI::App& app);
std::function<int()> add_run_command(CLI::App& app);

}  // namespace profctl::cli
