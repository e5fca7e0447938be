// SPDX-License-Identifier: MIT
// The live status line's "hot:" — the function with the most cpu so far: the collector's
// hottest innermost pcs, named (no source lines, no inlines) on the thread that owns the
// target's Dwfl, at most once a second.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "profile/collector.h"
#include "symbolize/symbolizer.h"
#include "unwind/target_dwfl.h"

namespace profctl {

class HottestFunction {
 public:
  // `root_space`: the target's address space; leaves of other images are not named (their
  // modules are not `dwfl`'s).
  HottestFunction(TargetDwfl& dwfl, uint32_t root_space);
  // Looks again when a second has passed since the last look.
  void update(const Collector& collector);
  const std::string& name() const { return name_; }  // "": none yet
  double share() const { return share_; }            // of the cpu sampled so far

 private:
  std::unique_ptr<Symbolizer> sym_;
  uint32_t root_space_;
  std::chrono::steady_clock::time_point last_{};
  std::string name_;
  double share_ = 0;
};

}  // namespace profctl
