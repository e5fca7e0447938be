// SPDX-License-Identifier: MIT
// `profctl stack`: one stop of the whole world (a consistent picture), the detach, then —
// with the target running on — every thread's stack unwound and symbolized into a Capture
// (the thread table and, grouped, the threads profile).
#pragma once

#include <sys/types.h>

#include <memory>
#include <set>

#include "attach/traced_process.h"
#include "capture/capture_assembly.h"
#include "report/capture.h"
#include "symbolize/symbolizer.h"
#include "unwind/target_dwfl.h"

namespace profctl {

struct StackDumpRequest {
  CaptureHeader header;  // target and options; `start` is when the dump began
  std::set<pid_t> tids;  // only these threads (empty: all)
  size_t stack_bytes = 8u << 20;
  DwflOptions dwfl;
  SymbolizeOptions symbolize;
  bool group = false;  // also the threads profile
};

// Throws UserError(kTargetGone) when the world cannot be stopped or its modules read.
// Warns (spdlog) of a requested tid that is not a thread of the target.
Capture dump_stacks(std::unique_ptr<TracedProcess> tp, const StackDumpRequest& r);

}  // namespace profctl
