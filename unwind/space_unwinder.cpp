// SPDX-License-Identifier: MIT
#include "unwind/space_unwinder.h"

namespace profctl {

void SpaceModules::add(uint32_t space, std::unique_ptr<TargetDwfl> dwfl) {
  std::lock_guard lock(mu_);
  spaces_[space] = std::move(dwfl);
}

TargetDwfl* SpaceModules::get(uint32_t space) const {
  std::lock_guard lock(mu_);
  auto it = spaces_.find(space);
  return it != spaces_.end() ? it->second.get() : nullptr;
}

UnwindResult SpaceUnwinder::unwind(const Snapshot& snap) {
  TargetDwfl* d = snap.space != 0 ? spaces_.get(snap.space) : nullptr;
  if (d == nullptr) {
    d = &fallback_;
  }
  std::unique_ptr<DwflUnwinder>& u = unwinders_[d];
  if (!u) {
    u = std::make_unique<DwflUnwinder>(*d);
  }
  return u->unwind(snap);
}

}  // namespace profctl
