// SPDX-License-Identifier: MIT
// threads: Go's goroutine profile for threads. The capture's last stop of the world (taken
// for the thread table whatever the kinds), its identical stacks grouped.
#include "capture/assembly.h"
#include "capture/profile_source.h"

namespace profctl {
namespace {

class ThreadsSource final : public ProfileSource {
 public:
  std::string_view name() const override { return "threads"; }
  void plan(SessionPlan& /*p*/, const CaptureSettings& /*s*/) const override {
    // The last stopped world is every capture's (the thread table): nothing to add.
  }
  void add_to(Assembly& a) const override {
    if (const UnwoundWorld* w = a.world()) {
      add_threads_profile(a.capture(), *w, a.symbolizer());
    }
  }
};

}  // namespace

const ProfileSource& threads_source() {
  static const ThreadsSource s;
  return s;
}

}  // namespace profctl
