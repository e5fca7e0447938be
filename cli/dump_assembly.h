// Turns a stopped-world capture into a symbolized Capture: unwind every snapshot (after
// the target was resumed), symbolize each unique pc once, fill the thread table.
#pragma once

#include <map>
#include <string>

#include "attach/traced_process.h"
#include "report/capture.h"
#include "symbolize/symbolizer.h"
#include "unwind/target_dwfl.h"

namespace profctl::cli {

struct DumpInputs {
  pid_t pid = 0;
  std::string start;
  std::map<std::string, std::string> options;
};

Capture assemble_dump(const DumpInputs& in, const WorldCapture& world, TargetDwfl& dwfl,
                      const SymbolizeOptions& sopts);

}  // namespace profctl::cli
