// SPDX-License-Identifier: MIT
// ProbeTables: the compiled CFI tables (unwind/cfi_table.h) of a probed process's modules,
// placed in its probe area so that the blob walks a recorded call's stack in the target and
// records pcs instead of a stack copy (probe/README.md "The stack walk in the target").
// Tables come from the same per-build-id cache as profctl's own unwinder. Placed again when
// the process's executable mappings change (dlopen): the area's directory is replaced, the
// rows already written stay. A forked child starts from its parent's placement (the same
// mappings), so following a fork reads no ELF.
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "probe/shared_area.h"
#include "unwind/cfi_modules.h"
#include "unwind/target_dwfl.h"

namespace profctl {

class ProbeTables {
 public:
  // The modules of one image, their tables, and what the area's directory is made of.
  struct Placement {
    std::string code_maps;  // the executable file mappings they were read from
    std::unique_ptr<TargetDwfl> dwfl;
    std::unique_ptr<CfiModules> modules;
    std::vector<probe::UnwindModule> list;  // spans into the modules' tables
  };

  explicit ProbeTables(pid_t pid) : pid_(pid) {}
  // A forked child: its parent's placement until its own mappings change.
  ProbeTables(pid_t pid, std::shared_ptr<const Placement> parent)
      : pid_(pid), placement_(std::move(parent)) {}

  // Places the tables in `area`: the first call always (from the parent's placement if
  // there is one and the mappings are the same), later ones when the executable mappings
  // changed. False when the modules cannot be read (the process went): its records keep
  // their stack copies.
  bool refresh(probe::SharedArea& area);
  // Reads the modules and their tables now (before the probes' area exists), so that the
  // first refresh() only copies them in: called before the install, the tables are in
  // place before the program's first recorded call, not ~100 ms into it.
  void prepare();
  bool placed() const { return placed_ > 0; }
  std::shared_ptr<const Placement> placement() const { return placement_; }

 private:
  pid_t pid_;
  std::shared_ptr<const Placement> placement_;
  bool published_ = false;
  size_t placed_ = 0;
};

}  // namespace profctl
