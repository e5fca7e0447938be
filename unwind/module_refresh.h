// SPDX-License-Identifier: MIT
// ModuleRefresh: when a pc falls in no module of a TargetDwfl, whether to re-read the
// process's maps now. A library loaded a moment ago must not wait (`run` unwinds its first
// thread creations within milliseconds of libc's mapping; a dlopen'd library's first
// samples may be the last of a short program), but pcs that stay unknown (JIT code, garbage
// pcs) must not re-read the maps on every lookup.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "unwind/target_dwfl.h"

namespace profctl {

class ModuleRefresh {
 public:
  explicit ModuleRefresh(TargetDwfl& target) : target_(target) {}

  // For a pc in no module: a page not seen unknown since the modules last changed re-reads
  // at once (up to 256 pages a generation); others at most every 20 ms. True when the
  // modules changed.
  bool operator()(uint64_t pc);

 private:
  TargetDwfl& target_;
  std::chrono::steady_clock::time_point last_refresh_{};
  // Pages still in no module after a re-read, for this generation of the modules.
  std::vector<uint64_t> unknown_pages_;
  uint64_t unknown_generation_ = 0;
};

}  // namespace profctl
