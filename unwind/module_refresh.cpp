// SPDX-License-Identifier: MIT
#include "unwind/module_refresh.h"

#include <algorithm>

namespace profctl {

bool ModuleRefresh::operator()(uint64_t pc) {
  constexpr size_t kMaxUnknownPages = 256;
  if (target_.generation() != unknown_generation_) {
    unknown_generation_ = target_.generation();
    unknown_pages_.clear();
  }
  const uint64_t page = pc >> 12;
  const bool fresh =
      std::find(unknown_pages_.begin(), unknown_pages_.end(), page) == unknown_pages_.end() &&
      unknown_pages_.size() < kMaxUnknownPages;
  const auto now = std::chrono::steady_clock::now();
  if (!fresh && now - last_refresh_ < std::chrono::milliseconds(20)) {
    return false;
  }
  last_refresh_ = now;
  const uint64_t gen = target_.generation();
  if (target_.refresh() && target_.generation() != gen) {
    return true;
  }
  if (fresh) {
    unknown_pages_.push_back(page);
  }
  return false;
}

}  // namespace profctl
