// SPDX-License-Identifier: MIT
#include "capture/stack_dump.h"

#include <chrono>

#include "base/log.h"
#include "base/user_error.h"
#include "unwind/table_unwinder.h"

namespace profctl {
namespace {

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

void warn_missing_tids(const WorldCapture& world, const StackDumpRequest& r) {
  for (pid_t tid : r.tids) {
    bool found = false;
    for (const auto& t : world.threads) {
      found = found || t.info.tid == tid;
    }
    if (!found) {
      logger("capture")->warn("thread {} is not a thread of pid {}", tid, r.header.pid);
    }
  }
}

}  // namespace

Capture dump_stacks(std::unique_ptr<TracedProcess> tp, const StackDumpRequest& r) {
  auto log = logger("capture");
  const auto t_start = std::chrono::steady_clock::now();
  CaptureOptions copts;
  copts.stack_bytes = r.stack_bytes;
  copts.only_tids = r.tids;
  copts.detach = true;
  auto world = tp->capture_world(copts);
  const pid_t space_pid = tp->space_pid();  // a live thread when the main thread has exited
  tp.reset();  // detached: the target runs on while we unwind and symbolize
  if (!world) {
    throw UserError(ExitCode::kTargetGone, "could not capture pid " + std::to_string(r.header.pid) +
                                               ": " + world.error().message());
  }
  warn_missing_tids(*world, r);
  log->debug("attach + capture: {:.1f} ms", ms_since(t_start));

  const auto t_dwfl = std::chrono::steady_clock::now();
  auto dwfl = TargetDwfl::for_process(space_pid, r.dwfl);
  if (!dwfl) {
    throw UserError(ExitCode::kTargetGone,
                    "cannot read the modules of pid " + std::to_string(r.header.pid) + ": " +
                        dwfl.error().message(),
                    "the process may have exited during the dump");
  }
  log->debug("modules reported: {:.1f} ms", ms_since(t_dwfl));

  const auto t_sym = std::chrono::steady_clock::now();
  Capture capture = new_capture(r.header, **dwfl);
  {
    TableUnwinder unwinder(**dwfl);
    Symbolizer symbolizer(**dwfl, r.symbolize);
    add_world(capture, *world, unwinder, symbolizer, r.group);
  }
  capture.window.duration_s = ms_since(t_start) / 1e3;
  log->debug("unwind + symbolize: {:.1f} ms", ms_since(t_sym));
  log->debug("dump of {} threads took {:.1f} ms", capture.threads.size(),
             capture.window.duration_s * 1e3);
  return capture;
}

}  // namespace profctl
