// profctl attach PID / profctl run -- CMD: a sampling capture (cpu, wall, threadcreate,
// threads) written as capture.json, pprof, text and folded files.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace profctl::cli {

std::function<int()> add_attach_command(CLI::App& app);
std::function<int()> add_run_command(CLI::App& app);

// "30s", "1.5s", "500ms", "2m", "1h", or plain seconds. Throws UserError(kUsage).
double parse_duration_s(const std::string& text);

}  // namespace profctl::cli
