// SPDX-License-Identifier: MIT
// profctl diff BASE.json NEW.json: what changed between two captures, and a gate a CI job
// can fail on (--fail-if, exit 5).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace profctl::cli {

std::function<int()> add_diff_command(CLI::App& app);

}  // namespace profctl::cli
