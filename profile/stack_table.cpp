// SPDX-License-Identifier: MIT
#include "profile/stack_table.h"

namespace profctl {

size_t StackTable::Hash::operator()(const std::vector<UnwoundFrame>& v) const {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a over (pc, activation)
  for (const auto& f : v) {
    h = (h ^ (f.pc * 2 + (f.activation ? 1 : 0))) * 1099511628211ULL;
  }
  return static_cast<size_t>(h);
}

bool StackTable::Eq::operator()(const std::vector<UnwoundFrame>& a,
                                const std::vector<UnwoundFrame>& b) const {
  if (a.size() != b.size()) {
    return false;
  }
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].pc != b[i].pc || a[i].activation != b[i].activation) {
      return false;
    }
  }
  return true;
}

StackId StackTable::intern(std::span<const UnwoundFrame> frames) {
  std::vector<UnwoundFrame> key(frames.begin(), frames.end());
  auto it = index_.find(key);
  if (it != index_.end()) {
    return it->second;
  }
  if (!key.empty() && (frames_ + key.size() > max_frames_ || stacks_.size() >= UINT32_MAX)) {
    ++capped_;
    return intern({});  // the empty stack holds no frames: always room for it
  }
  frames_ += key.size();
  auto id = static_cast<StackId>(stacks_.size());
  stacks_.push_back(key);
  index_.emplace(std::move(key), id);
  return id;
}

}  // namespace profctl
