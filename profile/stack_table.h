// SPDX-License-Identifier: MIT
// StackTable: interned stacks (docs/DESIGN.md "Performance principles": stacks are stored as
// pcs and interned; symbolization runs once per unique pc).
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>
#include <vector>

#include "unwind/unwinder.h"

namespace profctl {

using StackId = uint32_t;

class StackTable {
 public:
  StackId intern(std::span<const UnwoundFrame> frames);
  const std::vector<UnwoundFrame>& get(StackId id) const { return stacks_[id]; }
  size_t size() const { return stacks_.size(); }

 private:
  struct Hash {
    size_t operator()(const std::vector<UnwoundFrame>& v) const;
  };
  struct Eq {
    bool operator()(const std::vector<UnwoundFrame>& a, const std::vector<UnwoundFrame>& b) const;
  };
  std::vector<std::vector<UnwoundFrame>> stacks_;
  std::unordered_map<std::vector<UnwoundFrame>, StackId, Hash, Eq> index_;
};

}  // namespace profctl
