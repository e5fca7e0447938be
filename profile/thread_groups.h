// SPDX-License-Identifier: MIT
// The "threads" profile: Go's goroutine profile for threads. Identical stacks are grouped,
// counted, and keep the list of the threads that share them.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "profile/profile_data.h"

namespace profctl {

struct ThreadStackRef {
  StackId stack = 0;
  pid_t tid = 0;
  std::string name;
};

// One row per distinct stack, largest groups first, value threads/count; labels tid and
// thread_name (the group's first thread), tids and thread_names (all of them, in order).
ProfileData group_threads(const std::vector<ThreadStackRef>& threads);

}  // namespace profctl
