// SPDX-License-Identifier: MIT
// Symbolizer: pc -> frames (docs/DESIGN.md "libdwfl" c), once per unique (pc, activation), cached.
// Missing debug info degrades to module+offset, never to a failure.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "symbolize/frame.h"
#include "unwind/target_dwfl.h"

namespace profctl {

struct SymbolizeOptions {
  bool inline_frames = true;  // --no-inline turns this off
  bool source = true;         // --no-source: no file:line lookups
};

class Symbolizer {
 public:
  Symbolizer(TargetDwfl& dwfl, SymbolizeOptions opts);
  ~Symbolizer();

  // The frames at one unwound pc: inlined frames first (innermost), then the physical
  // frame. Never empty. `activation` as in UnwoundFrame. The reference stays valid for the
  // Symbolizer's lifetime.
  const std::vector<Frame>& symbolize(uint64_t pc, bool activation);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace profctl
