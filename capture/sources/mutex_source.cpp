// SPDX-License-Identifier: MIT
// mutex: Go's mutex profile. 1 in mutex_fraction contended lock waits, recorded by the
// probes; and mutex_holders, the same delays charged to the stack that released the lock
// (Go's attribution), when releases were seen.
#include "capture/assembly.h"
#include "capture/profile_source.h"

namespace profctl {
namespace {

class MutexSource final : public ProfileSource {
 public:
  std::string_view name() const override { return "mutex"; }
  void plan(SessionPlan& p, const CaptureSettings& s) const override {
    p.probes.mutex = true;
    p.probes.mutex_fraction = s.mutex_fraction;
  }
  void describe(std::map<std::string, std::string>& options,
                const CaptureSettings& s) const override {
    options["probe_ring"] =
        s.probe_lossy ? "lossy: a full ring drops records" : "waits: a full ring holds the writer";
    options["mutex_fraction"] = std::to_string(s.mutex_fraction);
  }
  void add_to(Assembly& a) const override {
    ProbeCapture* probes = a.run().probes.get();
    if (probes == nullptr || probes->waits() == nullptr) {
      return;
    }
    WaitCollector& wc = *probes->waits();
    a.add_profile("mutex", wc.mutex(), wc.stacks());
    a.set_loss("mutex", probes->losses().mutex);
    a.name_locks("mutex");
    if (wc.stats().wakes > 0) {
      a.add_profile("mutex_holders", wc.mutex_holders(), wc.stacks());
      // Charged from the mutex waits: it lost what they lost (said once, for mutex).
      a.set_loss("mutex_holders", probes->losses().mutex, false);
      a.name_locks("mutex_holders");
    }
    if (wc.stats().unattributed > 0) {
      a.warn("mutex_holders: " + std::to_string(wc.stats().unattributed) +
             " contentions have no recorded release (rwlocks, whose releases are not probed, "
             "or locks released before the probes were in)");
    }
  }
};

}  // namespace

const ProfileSource& mutex_source() {
  static const MutexSource s;
  return s;
}

}  // namespace profctl
