// SPDX-License-Identifier: MIT
#include "base/log.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <map>
#include <mutex>

namespace profctl {
namespace {

struct Registry {
  std::mutex mu;
  spdlog::level::level_enum default_level = spdlog::level::warn;
  std::map<std::string, spdlog::level::level_enum, std::less<>> overrides;
  std::map<std::string, std::shared_ptr<spdlog::logger>, std::less<>> loggers;
  spdlog::sink_ptr sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
};

Registry& registry() {
  static Registry r;
  return r;
}

spdlog::level::level_enum level_for(Registry& r, std::string_view stage) {
  auto it = r.overrides.find(stage);
  return it == r.overrides.end() ? r.default_level : it->second;
}

}  // namespace

std::shared_ptr<spdlog::logger> logger(std::string_view stage) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  auto it = r.loggers.find(stage);
  if (it != r.loggers.end()) {
    return it->second;
  }
  auto lg = std::make_shared<spdlog::logger>(std::string(stage), r.sink);
  lg->set_pattern("profctl[%n] %l: %v");
  lg->set_level(level_for(r, stage));
  r.loggers.emplace(std::string(stage), lg);
  return lg;
}

bool configure_logging(spdlog::level::level_enum default_level, std::string_view spec) {
  Registry& r = registry();
  std::lock_guard lock(r.mu);
  r.default_level = default_level;
  r.overrides.clear();
  while (!spec.empty()) {
    auto comma = spec.find(',');
    std::string_view item = spec.substr(0, comma);
    spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
    auto eq = item.find('=');
    std::string_view name = eq == std::string_view::npos ? std::string_view{} : item.substr(0, eq);
    std::string level_name(eq == std::string_view::npos ? item : item.substr(eq + 1));
    auto level = spdlog::level::from_str(level_name);
    if (level == spdlog::level::off && level_name != "off") {
      return false;
    }
    if (name.empty()) {
      r.default_level = level;
    } else {
      r.overrides[std::string(name)] = level;
    }
  }
  for (auto& [name, lg] : r.loggers) {
    lg->set_level(level_for(r, name));
  }
  return true;
}

}  // namespace profctl
