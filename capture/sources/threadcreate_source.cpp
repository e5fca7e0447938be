// SPDX-License-Identifier: MIT
// threadcreate: Go's threadcreate profile. The creator's stack at each clone, taken at the
// clone event the session serves between ticks (no ticks needed).
#include "capture/assembly.h"
#include "capture/profile_source.h"

namespace profctl {
namespace {

class ThreadCreateSource final : public ProfileSource {
 public:
  std::string_view name() const override { return "threadcreate"; }
  void plan(SessionPlan& p, const CaptureSettings& /*s*/) const override {
    p.collector.threadcreate = true;
  }
  void add_to(Assembly& a) const override { a.add_collector_profile("threadcreate"); }
};

}  // namespace

const ProfileSource& threadcreate_source() {
  static const ThreadCreateSource s;
  return s;
}

}  // namespace profctl
