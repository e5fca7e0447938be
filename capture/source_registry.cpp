// SPDX-License-Identifier: MIT
#include "capture/source_registry.h"

#include <algorithm>
#include <sstream>

#include "base/user_error.h"

namespace profctl {

// Each defined in its own file of capture/sources/.
const ProfileSource& cpu_source();
const ProfileSource& wall_source();
const ProfileSource& threadcreate_source();
const ProfileSource& threads_source();
const ProfileSource& heap_source();
const ProfileSource& block_source();
const ProfileSource& mutex_source();

const std::vector<const ProfileSource*>& profile_sources() {
  static const std::vector<const ProfileSource*> all = {
      &cpu_source(),  &wall_source(),  &threadcreate_source(), &threads_source(),
      &heap_source(), &block_source(), &mutex_source(),
  };
  return all;
}

const ProfileSource* find_profile_source(std::string_view name) {
  for (const ProfileSource* s : profile_sources()) {
    if (s->name() == name) {
      return s;
    }
  }
  return nullptr;
}

std::string profile_names() {
  std::string out;
  for (const ProfileSource* s : profile_sources()) {
    out += (out.empty() ? "" : ",") + std::string(s->name());
  }
  return out;
}

std::vector<const ProfileSource*> parse_profile_list(const std::string& list) {
  std::vector<const ProfileSource*> chosen;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) {
      continue;
    }
    if (item == "all") {
      chosen = profile_sources();
      continue;
    }
    const ProfileSource* s = find_profile_source(item);
    if (s == nullptr) {
      throw UserError(ExitCode::kUsage, "unknown profile '" + item + "'",
                      "use " + profile_names() + " (or all)");
    }
    chosen.push_back(s);
  }
  if (chosen.empty()) {
    throw UserError(ExitCode::kUsage, "--profiles is empty", "use " + profile_names());
  }
  // Registry order, each kind once.
  std::vector<const ProfileSource*> out;
  for (const ProfileSource* s : profile_sources()) {
    if (std::find(chosen.begin(), chosen.end(), s) != chosen.end()) {
      out.push_back(s);
    }
  }
  return out;
}

}  // namespace profctl
