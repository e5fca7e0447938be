// SPDX-License-Identifier: MIT
// Unwinder: Snapshot -> pcs (STYLE 14). An interface so that profile/ and report/ tests can
// use a fake.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attach/snapshot.h"

namespace profctl {

struct UnwoundFrame {
  uint64_t pc = 0;
  // True for the innermost frame and for frames interrupted by a signal: pc is the exact
  // instruction, not a return address, so symbolize must not subtract 1 (docs/DESIGN.md "libdwfl" c.1).
  bool activation = false;
};

struct UnwindResult {
  std::vector<UnwoundFrame> frames;  // innermost first
  bool truncated = false;            // the walk stopped before the outermost frame
  std::string reason;                // why it stopped early, when truncated
};

class Unwinder {
 public:
  virtual ~Unwinder() = default;
  virtual UnwindResult unwind(const Snapshot& snap) = 0;
};

}  // namespace profctl
