// SPDX-License-Identifier: MIT
// DwflUnwinder: libdwfl CFI unwinding from a Snapshot, never from live memory
// (docs/DESIGN.md "libdwfl" b). libdwfl falls back to frame pointers by itself where a pc has no CFI.
#pragma once

#include <cstddef>
#include <memory>

#include "unwind/target_dwfl.h"
#include "unwind/unwinder.h"

namespace profctl {

class DwflUnwinder : public Unwinder {
 public:
  // `dwfl` must outlive the unwinder. max_frames bounds a corrupt or cyclic stack; it is
  // far above any real depth, so no real stack is cut (0 = the default, 65536).
  explicit DwflUnwinder(TargetDwfl& dwfl, size_t max_frames = 0);
  ~DwflUnwinder() override;
  UnwindResult unwind(const Snapshot& snap) override;

 private:
  UnwindResult retry_from_entry(const Snapshot& snap, UnwindResult first);
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace profctl
