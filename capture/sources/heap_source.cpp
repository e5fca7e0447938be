// SPDX-License-Identifier: MIT
// heap: Go's heap profile. Allocations and frees recorded by the probes on the allocator's
// entry points (sampled every mem_rate bytes on average), tracked by HeapTracker: in-use
// and allocated objects and bytes, the peak and the long-lived.
#include "capture/assembly.h"
#include "capture/profile_source.h"

namespace profctl {
namespace {

class HeapSource final : public ProfileSource {
 public:
  std::string_view name() const override { return "heap"; }
  void plan(SessionPlan& p, const CaptureSettings& s) const override {
    p.probes.heap = true;
    p.probes.mem_rate = s.mem_rate;
  }
  void describe(std::map<std::string, std::string>& options,
                const CaptureSettings& s) const override {
    options["probe_ring"] =
        s.probe_lossy ? "lossy: a full ring drops records" : "waits: a full ring holds the writer";
    options["mem_rate"] = std::to_string(s.mem_rate);
    options["leak_age_ns"] = std::to_string(s.leak_age_ns);
  }
  void add_to(Assembly& a) const override {
    ProbeCapture* probes = a.run().probes.get();
    if (probes == nullptr || probes->heap() == nullptr) {
      return;
    }
    HeapCollector& heap = *probes->heap();
    const HeapResult r = heap.tracker().result(a.run().probes_end_ns, a.settings().leak_age_ns);
    add_heap_profile(a.capture(), r, heap.stacks(),
                     [&a](uint32_t space) -> Symbolizer& { return a.symbolizer_for(space); });
    a.set_loss("heap", probes->losses().heap);
  }
};

}  // namespace

const ProfileSource& heap_source() {
  static const HeapSource s;
  return s;
}

}  // namespace profctl
