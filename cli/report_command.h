// SPDX-License-Identifier: MIT
// profctl report CAPTURE.json: re-render a saved capture without the target.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace profctl::cli {

std::function<int()> add_report_command(CLI::App& app);

}  // namespace profctl::cli
