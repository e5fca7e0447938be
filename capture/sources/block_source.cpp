// SPDX-License-Identifier: MIT
// block: Go's block profile. Every wait on a futex, condition variable, semaphore, join or
// lock that lasted block_rate_ns or longer (shorter ones sampled in proportion), recorded
// by the probes on glibc's futex-wait funnels, labelled with the lock and its name.
#include "capture/assembly.h"
#include "capture/profile_source.h"

namespace profctl {
namespace {

class BlockSource final : public ProfileSource {
 public:
  std::string_view name() const override { return "block"; }
  void plan(SessionPlan& p, const CaptureSettings& s) const override {
    p.probes.block = true;
    p.probes.block_rate_ns = s.block_rate_ns;
  }
  void describe(std::map<std::string, std::string>& options,
                const CaptureSettings& s) const override {
    options["probe_ring"] =
        s.probe_lossy ? "lossy: a full ring drops records" : "waits: a full ring holds the writer";
    options["block_rate_ns"] = std::to_string(s.block_rate_ns);
  }
  void add_to(Assembly& a) const override {
    ProbeCapture* probes = a.run().probes.get();
    if (probes == nullptr || probes->waits() == nullptr) {
      return;
    }
    WaitCollector& wc = *probes->waits();
    a.add_profile("block", wc.block(), wc.stacks());
    a.set_loss("block", probes->losses().block);
    a.name_locks("block");
  }
};

}  // namespace

const ProfileSource& block_source() {
  static const BlockSource s;
  return s;
}

}  // namespace profctl
