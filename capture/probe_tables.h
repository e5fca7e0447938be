// SPDX-License-Identifier: MIT
// ProbeTables: the compiled CFI tables (unwind/cfi_table.h) of a probed process's modules,
// placed in its probe area so that the blob walks a recorded call's stack in the target and
// records pcs instead of a stack copy (probe/README.md "The stack walk"). Tables come from
// the same per-build-id cache as profctl's own unwinder. Placed again when the process's
// modules change (dlopen): the area's directory is replaced, the rows already written stay.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "probe/shared_area.h"
#include "unwind/cfi_modules.h"
#include "unwind/target_dwfl.h"

namespace profctl {

class ProbeTables {
 public:
  explicit ProbeTables(pid_t pid) : pid_(pid) {}
  ~ProbeTables();
  ProbeTables(const ProbeTables&) = delete;
  ProbeTables& operator=(const ProbeTables&) = delete;

  // Places the tables of the process's modules now in `area`, when they changed since the
  // last call (the first call always). False when the modules cannot be read (the process
  // went): its records keep their stack copies.
  bool refresh(probe::SharedArea& area);
  size_t modules_placed() const { return placed_; }

 private:
  pid_t pid_;
  std::unique_ptr<TargetDwfl> dwfl_;
  std::optional<CfiModules> modules_;
  // The process's executable file mappings at the last placement: only a change of these
  // (dlopen, dlclose) makes libdwfl report the modules again, not the heap's mappings.
  std::string code_maps_;
  size_t placed_ = 0;
};

}  // namespace profctl
