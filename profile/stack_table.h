// SPDX-License-Identifier: MIT
// StackTable: interned stacks (docs/DESIGN.md "Performance principles": stacks are stored as
// pcs and interned; symbolization runs once per unique pc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "unwind/unwinder.h"

namespace profctl {

using StackId = uint32_t;

class StackTable {
 public:
  // max_frames bounds the frames held by all unique stacks together (memory: about 32 bytes
  // a frame, the table and its index). Past it a new stack is not kept: intern() returns the
  // empty stack's id and counts it (capped()). Stacks unwound from memory a target wrote
  // (the probes' records) can all differ; a table of those needs a bound.
  explicit StackTable(size_t max_frames = SIZE_MAX) : max_frames_(max_frames) {}

  StackId intern(std::span<const UnwoundFrame> frames);
  const std::vector<UnwoundFrame>& get(StackId id) const { return stacks_[id]; }
  size_t size() const { return stacks_.size(); }
  // New stacks not kept because the table was full.
  uint64_t capped() const { return capped_; }
  size_t max_frames() const { return max_frames_; }

 private:
  struct Hash {
    size_t operator()(const std::vector<UnwoundFrame>& v) const;
  };
  struct Eq {
    bool operator()(const std::vector<UnwoundFrame>& a, const std::vector<UnwoundFrame>& b) const;
  };
  std::vector<std::vector<UnwoundFrame>> stacks_;
  std::unordered_map<std::vector<UnwoundFrame>, StackId, Hash, Eq> index_;
  size_t max_frames_;
  size_t frames_ = 0;
  uint64_t capped_ = 0;
};

}  // namespace profctl
