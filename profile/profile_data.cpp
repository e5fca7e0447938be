#include "profile/profile_data.h"

namespace profctl {

void ProfileData::add(StackId stack, const std::map<std::string, std::string>& labels,
                      const std::vector<int64_t>& values) {
  auto key = std::make_pair(stack, labels);
  auto it = index_.find(key);
  size_t row;
  if (it == index_.end()) {
    row = rows_.size();
    rows_.push_back({stack, labels, std::vector<int64_t>(types_.size(), 0)});
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
  switch (state) {
    case 'R':
      return "running";
    case 'S':
      return "sleeping";
    case 'D':
      return "disk";
    case 'T':
      return "stopped";
    case 't':
      return "tracing-stop";
    case 'Z':
      return "zombie";
    case 'X':
      return "dead";
    case 'I':
      return "idle";
    default:
      return "unknown";
  }
}

}  // namespace profctl
