// SPDX-License-Identifier: MIT
// Symbolizer: pc -> frames (docs/DESIGN.md "libdwfl" c), once per unique (pc, activation), cached.
// Missing debug info degrades to module+offset, never to a failure.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "symbolize/frame.h"
#include "unwind/target_dwfl.h"

namespace profctl {

struct SymbolizeOptions {
  bool inline_frames = true;  // --no-inline turns this off
  bool source = true;         // --no-source: no file:line lookups
};

// Frames already computed, by file (build-id) and ELF address, shared by the Symbolizers of
// several address spaces: a library every image of a process tree maps (libc, ld.so) is
// read and indexed (symbol table, CU ranges, DWARF) once, not once per image. Frames of a
// file do not depend on where an image maps it; pc and module path are the image's own.
class SharedFrames {
 public:
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }

 private:
  friend class Symbolizer;
  std::unordered_map<std::string, std::vector<Frame>> frames_;  // file key + ELF addr
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

class Symbolizer {
 public:
  // `shared`: frames shared with other address spaces' Symbolizers (null: none).
  Symbolizer(TargetDwfl& dwfl, SymbolizeOptions opts, std::shared_ptr<SharedFrames> shared = {});
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
