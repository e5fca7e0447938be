// SPDX-License-Identifier: MIT
// One named spdlog logger per stage (STYLE 18), all to stderr. Diagnostics only: results
// never go through a logger.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <string>
#include <string_view>

namespace profctl {

// The logger of a stage ("attach", "unwind", "symbolize", "report", "cli", ...), created
// on first use with the current default level.
std::shared_ptr<spdlog::logger> logger(std::string_view stage);

// Sets every stage's level; `spec` like "debug" or "attach=debug,unwind=trace" (levels
// per stage override the default). Returns false on a malformed spec.
bool configure_logging(spdlog::level::level_enum default_level, std::string_view spec = {});

}  // namespace profctl
