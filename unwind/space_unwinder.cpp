// SPDX-License-Identifier: MIT
#include "unwind/space_unwinder.h"

#include "base/log.h"

namespace profctl {

void SpaceModules::add(uint32_t space, Source src) {
  std::lock_guard lock(mu_);
  spaces_[space] = std::move(src);
}

void SpaceModules::update(uint32_t space, std::string maps_text) {
  std::lock_guard lock(mu_);
  if (auto it = spaces_.find(space); it != spaces_.end() && !maps_text.empty()) {
    it->second.maps_text = std::move(maps_text);
  }
}

std::optional<SpaceModules::Source> SpaceModules::get(uint32_t space) const {
  std::lock_guard lock(mu_);
  auto it = spaces_.find(space);
  return it != spaces_.end() ? std::optional<Source>(it->second) : std::nullopt;
}

std::map<uint32_t, SpaceModules::Source> SpaceModules::all() const {
  std::lock_guard lock(mu_);
  return spaces_;
}

size_t SpaceModules::size() const {
  std::lock_guard lock(mu_);
  return spaces_.size();
}

void SpaceModules::keep_loaded(uint32_t space, std::unique_ptr<TargetDwfl> dwfl) {
  std::lock_guard lock(mu_);
  loaded_[space] = std::move(dwfl);
}

std::unique_ptr<TargetDwfl> SpaceModules::take_loaded(uint32_t space) {
  std::lock_guard lock(mu_);
  auto it = loaded_.find(space);
  if (it == loaded_.end()) {
    return nullptr;
  }
  auto d = std::move(it->second);
  loaded_.erase(it);
  return d;
}

SpaceUnwinder::~SpaceUnwinder() {
  unwinders_.clear();  // the Dwfls keep their unwinding state; nothing of ours dangles
  for (auto& [space, d] : loaded_) {
    if (d) {
      spaces_.keep_loaded(space, std::move(d));
    }
  }
}

TargetDwfl& SpaceUnwinder::dwfl_of(uint32_t space) {
  if (space == 0) {
    return fallback_;
  }
  auto it = loaded_.find(space);
  if (it == loaded_.end()) {
    std::unique_ptr<TargetDwfl> d;
    if (auto src = spaces_.get(space)) {
      auto r = TargetDwfl::for_maps(src->pid, std::move(src->maps_text), spaces_.options());
      if (r) {
        d = std::move(*r);
      } else {
        logger("unwind")->debug("modules of pid {}: {}", src->pid, r.error().message());
      }
    }
    it = loaded_.emplace(space, std::move(d)).first;
  }
  return it->second ? *it->second : fallback_;
}

UnwindResult SpaceUnwinder::unwind(const Snapshot& snap) {
  TargetDwfl* d = &dwfl_of(snap.space);
  std::unique_ptr<TableUnwinder>& u = unwinders_[d];
  if (!u) {
    u = std::make_unique<TableUnwinder>(*d);
  }
  return u->unwind(snap);
}

}  // namespace profctl
