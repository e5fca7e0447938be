// SPDX-License-Identifier: MIT
#include "profile/profile_data.h"

#include "base/thread_state.h"

namespace profctl {

void ProfileData::add(StackId stack, const std::map<std::string, std::string>& labels,
                      const std::vector<int64_t>& values, uint32_t space) {
  auto key = std::make_tuple(stack, space, labels);
  auto it = index_.find(key);
  size_t row;
  if (it == index_.end()) {
    row = rows_.size();
    rows_.push_back({stack, labels, std::vector<int64_t>(types_.size(), 0), space});
    index_.emplace(std::move(key), row);
  } else {
    row = it->second;
  }
  auto& v = rows_[row].values;
  for (size_t i = 0; i < v.size() && i < values.size(); ++i) {
    v[i] += values[i];
  }
}

const char* state_word(char state) {
  const char* w = thread_state_word(state);
  return w != nullptr ? w : "unknown";
}

}  // namespace profctl
