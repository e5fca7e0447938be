// SPDX-License-Identifier: MIT
#include "profile/thread_groups.h"

#include <algorithm>
#include <map>

namespace profctl {

ProfileData group_threads(const std::vector<ThreadStackRef>& threads) {
  std::map<StackId, std::vector<const ThreadStackRef*>> groups;
  for (const auto& t : threads) {
    groups[t.stack].push_back(&t);
  }
  std::vector<const std::vector<const ThreadStackRef*>*> order;
  for (const auto& [stack, members] : groups) {
    order.push_back(&members);
  }
  std::stable_sort(order.begin(), order.end(),
                   [](auto* a, auto* b) { return a->size() > b->size(); });

  ProfileData p({{"threads", "count"}}, {"threads", "count"}, 1);
  for (const auto* members : order) {
    std::string tids;
    std::string names;
    for (const ThreadStackRef* t : *members) {
      tids += (tids.empty() ? "" : ",") + std::to_string(t->tid);
      names += (names.empty() ? "" : ",") + t->name;
    }
    const ThreadStackRef& first = *members->front();
    p.add(first.stack,
          {{"tid", std::to_string(first.tid)},
           {"thread_name", first.name},
           {"tids", tids},
           {"thread_names", names}},
          {static_cast<int64_t>(members->size())});
  }
  return p;
}

}  // namespace profctl
