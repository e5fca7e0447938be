// SPDX-License-Identifier: MIT
#include "capture/assembly.h"

#include "base/log.h"
#include "report/profile_loss.h"

namespace profctl {

Assembly::Assembly(Capture& c, PipelineResult& run, const CaptureSettings& settings,
                   const SymbolizeOptions& symbolize)
    : capture_(c),
      run_(run),
      settings_(settings),
      symbolize_(symbolize),
      shared_frames_(std::make_shared<SharedFrames>()),
      sym_(*run.dwfl, symbolize, shared_frames_) {}

Assembly::~Assembly() {
  const SharedFrames& f = *shared_frames_;
  if (f.hits() + f.misses() > 0) {
    auto log = logger("symbolize");
    log->debug("symbols: {} pcs named from another image of the same file, {} computed ({} images)",
               f.hits(), f.misses(), space_syms_.size() + 1);
  }
}

Symbolizer& Assembly::symbolizer_for(uint32_t space) {
  auto d = run_.spaces.find(space);
  if (space == 0 || space == run_.root_space || d == run_.spaces.end()) {
    return sym_;
  }
  auto& s = space_syms_[space];
  if (!s) {
    s = std::make_unique<Symbolizer>(*d->second, symbolize_, shared_frames_);
  }
  return *s;
}

void Assembly::add_profile(const std::string& kind, const ProfileData& data,
                           const StackTable& stacks) {
  ::profctl::add_profile(capture_, kind, data, stacks,
                         [this](uint32_t space) -> Symbolizer& { return symbolizer_for(space); });
}

void Assembly::add_collector_profile(const std::string& kind) {
  const Collector& c = *run_.collector;
  if (auto it = c.profiles().find(kind); it != c.profiles().end()) {
    add_profile(kind, it->second, c.stacks());
  }
}

void Assembly::set_loss(const std::string& kind, const ProfileLoss& loss, bool warn_if_lossy) {
  auto it = capture_.profiles.find(kind);
  if (it == capture_.profiles.end()) {
    return;
  }
  it->second.loss = loss;
  it->second.dropped = loss.lost();
  if (std::string w = loss_warning(kind, it->second); warn_if_lossy && !w.empty()) {
    warn(std::move(w));
  }
}

void Assembly::name_locks(const std::string& kind) {
  auto p = capture_.profiles.find(kind);
  if (p == capture_.profiles.end()) {
    return;
  }
  if (!locks_) {
    HeapCollector* heap = run_.probes ? run_.probes->heap() : nullptr;
    locks_ = std::make_unique<LockNamer>(*run_.dwfl, sym_, heap);
  }
  locks_->name(p->second);
}

}  // namespace profctl
