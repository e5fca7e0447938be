// SPDX-License-Identifier: MIT
// wall: where the threads' time goes, running or not: every tick's sample of every thread
// (a thread that has not run since its last sample costs no stop), labelled with its state.
#include "capture/assembly.h"
#include "capture/profile_source.h"

namespace profctl {
namespace {

class WallSource final : public ProfileSource {
 public:
  std::string_view name() const override { return "wall"; }
  void plan(SessionPlan& p, const CaptureSettings& /*s*/) const override {
    p.ticks = true;
    p.collector.wall = true;
  }
  void add_to(Assembly& a) const override { a.add_collector_profile("wall"); }
};

}  // namespace

const ProfileSource& wall_source() {
  static const WallSource s;
  return s;
}

}  // namespace profctl
