// SPDX-License-Identifier: MIT
// ThreadStack: one thread of a stack dump as unwound pcs, before symbolization.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "attach/thread_info.h"
#include "unwind/unwinder.h"

namespace profctl {

struct ThreadStack {
  ThreadInfo info;
  std::vector<UnwoundFrame> frames;  // innermost first
  bool truncated = false;
  std::string truncated_reason;
};

}  // namespace profctl
