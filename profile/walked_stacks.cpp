// SPDX-License-Identifier: MIT
#include "profile/walked_stacks.h"

namespace profctl {

StackId WalkedStacks::resolve(StackTable& table, uint64_t ring, uint64_t id,
                              std::span<const uint64_t> pcs) {
  const Key key{ring, id};
  if (pcs.empty()) {
    if (auto it = ids_.find(key); it != ids_.end()) {
      return it->second;
    }
    ++unknown_;
    return table.intern({});
  }
  // The first pc is the probed function's entry, an exact pc; the others return addresses.
  frames_.clear();
  for (size_t i = 0; i < pcs.size(); ++i) {
    frames_.push_back({pcs[i], i == 0});
  }
  const StackId stack = table.intern(frames_);
  // A second definition of an id (two threads wrote it at once) is the same stack.
  if (ids_.size() < max_ids_ || ids_.count(key) != 0) {
    ids_.emplace(key, stack);
  } else {
    ++capped_;
  }
  return stack;
}

}  // namespace profctl
