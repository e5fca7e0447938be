// SPDX-License-Identifier: MIT
// wall: where the threads' time goes, running or not: every tick's sample of every thread
// (a thread that has not run since its last sample costs no stop; a running one's is its CPU
// clock's latest sample where the kernel allows the clocks), labelled with its state.
#include "capture/assembly.h"
#include "capture/profile_source.h"

namespace profctl {
namespace {

class WallSource final : public ProfileSource {
 public:
  std::string_view name() const override { return "wall"; }
  void plan(SessionPlan& p, const CaptureSettings& s) const override {
    p.ticks = true;
    // A running thread's place at a tick is where it spends its CPU: its CPU clock's latest
    // sample says it without a stop (attach/sampling_session.h), so the clocks run for the
    // wall profile too, a cpu profile or not.
    p.cpu_timer = p.cpu_timer || s.cpu_timer;
    p.cpu_records = p.cpu_records || (s.cpu_timer && s.cpu_records);
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
