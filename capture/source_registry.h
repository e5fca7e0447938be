// SPDX-License-Identifier: MIT
// The registry of profile kinds: one ProfileSource per kind, in the order profiles are
// listed. The only place a kind's name is matched to its code.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "capture/profile_source.h"

namespace profctl {

// Every source, in registry order (cpu, wall, threadcreate, threads, heap, block, mutex).
const std::vector<const ProfileSource*>& profile_sources();
// The source of a kind, or null.
const ProfileSource* find_profile_source(std::string_view name);
// "cpu,wall,threadcreate,threads,heap,block,mutex": the kinds' names, comma-separated.
std::string profile_names();
// A --profiles list ("cpu,heap", "all") as its sources, in registry order, each once.
// Throws UserError(kUsage) for an unknown kind or an empty list.
std::vector<const ProfileSource*> parse_profile_list(const std::string& list);

}  // namespace profctl
