// SPDX-License-Identifier: MIT
// profctl's on-disk caches (unwind/'s CFI tables and inflated debug files): where they live,
// when a directory may be trusted, what a cache key may look like, and the size bound.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace profctl {

// $XDG_CACHE_HOME/profctl/SUB, else ~/.cache/profctl/SUB; "" when PROFCTL_NO_CACHE is set
// (to anything but 0) or neither variable holds an absolute path.
std::string cache_dir_from_environment(std::string_view sub);

// The directory is used only if it is the user's and no one else can write it: another
// user's files there would choose what profctl reads as its own.
bool cache_dir_is_private(const std::string& dir);

// Lower-case hex of 2 to 128 digits (a build-id note's bytes): safe as a file name.
bool valid_build_id(std::string_view id);

// Keeps the files of `dir` ending in `suffix` under `max_bytes`: the least recently written
// go first, down to three quarters of the bound, so that eviction does not run at every store.
void evict_oldest(const std::string& dir, std::string_view suffix, uint64_t max_bytes);

}  // namespace profctl
