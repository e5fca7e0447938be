#include "cli/capture_assembly.h"

#include <unordered_map>

#include "attach/proc.h"
#include "profile/thread_groups.h"

namespace profctl::cli {

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

void add_world(Capture& c, const WorldCapture& world, Unwinder& unwinder, Symbolizer& sym,
               bool group) {
  c.pause.world_stopped_ns = world.pause.world_stopped_ns;
  c.pause.stop_ns = world.pause.stop_ns;
  c.pause.capture_ns = world.pause.capture_ns;
  c.pause.resume_ns = world.pause.resume_ns;
  c.pause.stack_bytes = world.pause.stack_bytes;
  c.pause.threads = world.threads.size();
  c.warnings.insert(c.warnings.end(), world.notes.begin(), world.notes.end());

  StackTable table;
  std::vector<ThreadStackRef> refs;
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
    if (tc.snap) {
      UnwindResult r = unwinder.unwind(*tc.snap);
      ct.truncated = r.truncated;
      ct.truncated_reason = std::move(r.reason);
      ct.frames = symbolize_stack(r.frames, sym);
      refs.push_back({table.intern(r.frames), tc.info.tid, tc.info.name});
    } else {
      ct.truncated = true;
      ct.truncated_reason = tc.note;
    }
    c.threads.push_back(std::move(ct));
  }
  if (group) {
    add_profile(c, "threads", group_threads(refs), table, sym);
  }
}

void add_profile(Capture& c, const std::string& kind, const ProfileData& data,
                 const StackTable& stacks, Symbolizer& sym) {
  Profile p;
  for (const auto& t : data.types()) {
    p.sample_types.push_back({t.type, t.unit});
  }
  p.period_type = SampleType{data.period_type().type, data.period_type().unit};
  p.period = data.period();
  p.dropped = data.dropped;
  std::unordered_map<StackId, std::vector<Frame>> cache;
  for (const auto& row : data.rows()) {
    auto it = cache.find(row.stack);
    if (it == cache.end()) {
      it = cache.emplace(row.stack, symbolize_stack(stacks.get(row.stack), sym)).first;
    }
    p.samples.push_back({row.values, it->second, row.labels});
  }
  c.profiles[kind] = std::move(p);
}

void add_profiles(Capture& c, const Collector& col, Symbolizer& sym) {
  for (const auto& [kind, data] : col.profiles()) {
    add_profile(c, kind, data, col.stacks(), sym);
  }
}

}  // namespace profctl::cli
