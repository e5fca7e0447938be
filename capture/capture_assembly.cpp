// SPDX-License-Identifier: MIT
#include "capture/capture_assembly.h"

#include <map>
#include <unordered_map>

#include "attach/proc.h"

namespace profctl {

Capture new_capture(const CaptureHeader& h, const TargetDwfl& dwfl) {
  Capture c;
  c.tool_version = PROFCTL_VERSION;
  c.target.pid = h.pid;
  c.target.exe = h.exe;
  c.target.cmdline = h.cmdline;
  c.window.start = h.start;
  c.options = h.options;
  for (const auto& m : dwfl.modules()) {
    CaptureModule cm{m.path, m.start, m.end, m.file_offset, m.build_id, {}};
    for (const ModuleSegment& seg : m.exec_segments) {
      cm.exec_segments.push_back({seg.start, seg.limit, seg.file_offset});
    }
    c.modules.push_back(std::move(cm));
  }
  return c;
}

std::vector<Frame> symbolize_stack(const std::vector<UnwoundFrame>& stack, Symbolizer& sym) {
  std::vector<Frame> out;
  out.reserve(stack.size());
  for (const UnwoundFrame& f : stack) {
    const auto& frames = sym.symbolize(f.pc, f.activation);
    out.insert(out.end(), frames.begin(), frames.end());
  }
  return out;
}

UnwoundWorld add_thread_table(Capture& c, const WorldCapture& world, Unwinder& unwinder,
                              Symbolizer& sym, const WaitedFn& waited_ns) {
  c.pause.world_stopped_ns = world.pause.world_stopped_ns;
  c.pause.stop_ns = world.pause.stop_ns;
  c.pause.capture_ns = world.pause.capture_ns;
  c.pause.resume_ns = world.pause.resume_ns;
  c.pause.stack_bytes = world.pause.stack_bytes;
  c.pause.threads = world.threads.size();
  c.warnings.insert(c.warnings.end(), world.notes.begin(), world.notes.end());

  UnwoundWorld out;
  for (const ThreadCapture& tc : world.threads) {
    CaptureThread ct;
    ct.tid = tc.info.tid;
    ct.name = tc.info.name;
    ct.state = std::string(1, tc.info.state);
    if (tc.info.syscall) {
      ct.wait_syscall = syscall_name(tc.info.syscall->nr);
      ct.wait_address = tc.info.syscall->args[0];
    }
    ct.cpu_ns = tc.info.cpu_ns;
    if (tc.snap && !tc.snap->wait_function.empty() && waited_ns) {
      ct.waiting_in = tc.snap->wait_function;
      ct.waiting_ns = waited_ns(*tc.snap);
    }
    if (tc.snap) {
      UnwindResult r = unwinder.unwind(*tc.snap);
      ct.truncated = r.truncated;
      ct.truncated_reason = std::move(r.reason);
      ct.frames = symbolize_stack(r.frames, sym);
      out.refs.push_back({out.table.intern(r.frames), tc.info.tid, tc.info.name});
    } else {
      ct.truncated = true;
      ct.truncated_reason = tc.note;
    }
    c.threads.push_back(std::move(ct));
  }
  return out;
}

void add_threads_profile(Capture& c, const UnwoundWorld& world, Symbolizer& sym) {
  add_profile(c, "threads", group_threads(world.refs), world.table, sym);
}

void add_world(Capture& c, const WorldCapture& world, Unwinder& unwinder, Symbolizer& sym,
               bool group, const WaitedFn& waited_ns) {
  const UnwoundWorld unwound = add_thread_table(c, world, unwinder, sym, waited_ns);
  if (group) {
    add_threads_profile(c, unwound, sym);
  }
}

void add_profile(Capture& c, const std::string& kind, const ProfileData& data,
                 const StackTable& stacks, Symbolizer& sym) {
  add_profile(c, kind, data, stacks, [&sym](uint32_t) -> Symbolizer& { return sym; });
}

void add_profile(Capture& c, const std::string& kind, const ProfileData& data,
                 const StackTable& stacks, const SymbolizerFor& sym_for) {
  Profile p;
  for (const auto& t : data.types()) {
    p.sample_types.push_back({t.type, t.unit});
  }
  p.period_type = SampleType{data.period_type().type, data.period_type().unit};
  p.period = data.period();
  p.dropped = data.dropped;
  if (!data.default_type.empty()) {
    p.default_sample_type = data.default_type;
  }
  p.detail_omitted = data.detail_omitted;
  std::map<std::pair<uint32_t, StackId>, std::vector<Frame>> cache;
  for (const auto& row : data.rows()) {
    const auto key = std::make_pair(row.space, row.stack);
    auto it = cache.find(key);
    if (it == cache.end()) {
      it = cache.emplace(key, symbolize_stack(stacks.get(row.stack), sym_for(row.space))).first;
    }
    p.samples.push_back({row.values, it->second, row.labels});
  }
  c.profiles[kind] = std::move(p);
}

namespace {

std::map<std::string, uint64_t> heap_counters(const HeapCounters& k) {
  return {{"sampled_allocs", k.sampled_allocs},
          {"sampled_frees", k.sampled_frees},
          {"unknown_frees", k.unknown_frees},
          {"missed_frees", k.missed_frees},
          {"live_at_end", k.live_at_end},
          {"ring_dropped", k.ring_dropped},
          {"queue_dropped", k.queue_dropped},
          {"frees_dropped", k.frees_dropped},
          {"capped", k.capped},
          {"table_dropped", k.table_dropped}};
}

CaptureHeapSet heap_set(const HeapStackSet& set, const StackTable& stacks,
                        const SymbolizerFor& sym_for, bool ages) {
  CaptureHeapSet out{set.objects, set.bytes, set.raw_objects, set.raw_bytes, {}};
  for (const HeapStackUse& s : set.stacks) {
    CaptureHeapStack cs{s.objects, s.bytes, s.raw_objects, s.raw_bytes,
                        symbolize_stack(stacks.get(s.stack), sym_for(s.space))};
    if (ages) {
      cs.oldest_age_ns = s.oldest_age_ns;
      cs.oldest_tid = s.oldest_tid;
    }
    out.stacks.push_back(std::move(cs));
  }
  return out;
}

}  // namespace

void add_heap_profile(Capture& c, const HeapResult& heap, const StackTable& stacks,
                      const SymbolizerFor& sym_for) {
  add_profile(c, "heap", heap.profile, stacks, sym_for);
  Profile& p = c.profiles["heap"];
  // heap.raw has the same rows in the same order (HeapTracker::result).
  const auto& raw = heap.raw.rows();
  for (size_t i = 0; i < p.samples.size() && i < raw.size(); ++i) {
    p.samples[i].raw_values = raw[i].values;
  }
  CaptureHeap h;
  h.counters = heap_counters(heap.counters);
  h.peak_at_ns = heap.peak.at_ns;
  h.peak = heap_set(heap.peak, stacks, sym_for, false);
  h.leak_min_age_ns = heap.leaks.min_age_ns;
  h.leaks = heap_set(heap.leaks, stacks, sym_for, true);
  p.heap = std::move(h);
}

}  // namespace profctl
