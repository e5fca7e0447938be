#include "cli/dump_assembly.h"

#include "attach/proc.h"
#include "profile/thread_stack.h"
#include "unwind/dwfl_unwinder.h"

namespace profctl::cli {

Capture assemble_dump(const DumpInputs& in, const WorldCapture& world, TargetDwfl& dwfl,
                      const SymbolizeOptions& sopts) {
  Capture c;
  c.tool_version = PROFCTL_VERSION;
  c.target.pid = in.pid;
  c.target.exe = read_exe(in.pid);
  c.target.cmdline = read_cmdline(in.pid);
  c.window.start = in.start;
  c.options = in.options;
  c.pause.world_stopped_ns = world.pause.world_stopped_ns;
  c.pause.stop_ns = world.pause.stop_ns;
  c.pause.capture_ns = world.pause.capture_ns;
  c.pause.resume_ns = world.pause.resume_ns;
  c.pause.stack_bytes = world.pause.stack_bytes;
  c.pause.threads = world.threads.size();
  c.warnings = world.notes;
  for (const auto& m : dwfl.modules()) {
    c.modules.push_back({m.path, m.start, m.end, m.file_offset, m.build_id});
  }

  DwflUnwinder unwinder(dwfl);
  Symbolizer symbolizer(dwfl, sopts);
  for (const ThreadCapture& tc : world.threads) {
    ThreadStack ts;
    ts.info = tc.info;
    if (tc.snap) {
      UnwindResult r = unwinder.unwind(*tc.snap);
      ts.frames = std::move(r.frames);
      ts.truncated = r.truncated;
      ts.truncated_reason = std::move(r.reason);
    } else {
      ts.truncated = true;
      ts.truncated_reason = tc.note;
    }
    CaptureThread ct;
    ct.tid = ts.info.tid;
    ct.name = ts.info.name;
    ct.state = std::string(1, ts.info.state);
    if (ts.info.syscall) {
      ct.wait_syscall = syscall_name(ts.info.syscall->nr);
      ct.wait_address = ts.info.syscall->args[0];
    }
    ct.cpu_ns = ts.info.cpu_ns;
    ct.truncated = ts.truncated;
    ct.truncated_reason = ts.truncated_reason;
    for (const UnwoundFrame& f : ts.frames) {
      const auto& frames = symbolizer.symbolize(f.pc, f.activation);
      ct.frames.insert(ct.frames.end(), frames.begin(), frames.end());
    }
    c.threads.push_back(std::move(ct));
  }
  return c;
}

}  // namespace profctl::cli
