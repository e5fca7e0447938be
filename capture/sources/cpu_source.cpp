// SPDX-License-Identifier: MIT
// cpu: where the threads' CPU time goes. Samples from each thread's own CPU clock where the
// kernel allows it: its sample records (attach/perf_sampler.h: the thread is never stopped)
// or else its overflow signal (attach/cpu_timer.h: a stop per sample); else the ticks'
// samples of running threads. All are unwound and aggregated by the sample collector.
#include "capture/assembly.h"
#include "capture/profile_source.h"

namespace profctl {
namespace {

class CpuSource final : public ProfileSource {
 public:
  std::string_view name() const override { return "cpu"; }
  void plan(SessionPlan& p, const CaptureSettings& s) const override {
    p.ticks = true;
    p.cpu_timer = p.cpu_timer || s.cpu_timer;
    p.cpu_records = p.cpu_records || (s.cpu_timer && s.cpu_records);
    p.collector.cpu = true;
  }
  void add_to(Assembly& a) const override { a.add_collector_profile("cpu"); }
};

}  // namespace

const ProfileSource& cpu_source() {
  static const CpuSource s;
  return s;
}

}  // namespace profctl
