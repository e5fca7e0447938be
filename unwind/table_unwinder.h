// SPDX-License-Identifier: MIT
// TableUnwinder: unwinds a Snapshot through the compiled CFI tables of its modules
// (cfi_modules.h) and lets libdwfl (DwflUnwinder) unwind the snapshots the tables cannot
// finish: a pc with no row or in no module, a "not expressible" row (signal frames, PLT
// stubs, expressions), a read past the stack copy, an unusual frame. A walk is then done
// again by libdwfl from the start, so every result is exactly what DwflUnwinder alone would
// give; only the cost differs (a table walk is ~30x cheaper, bench/CFI_UNWIND.md).
// How often each happened is logged at debug level (-v) when the unwinder is destroyed.
//
// PROFCTL_UNWIND_TABLES=0 in the environment turns the tables off (libdwfl only): for
// comparing the two and as a way out should the tables ever be wrong.
// PROFCTL_UNWIND_TABLES=check unwinds every stack the tables finish with libdwfl too, and
// counts (and logs at warning level) each one where the pcs differ: how a capture of any
// program is checked against libdwfl.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <vector>

#include "unwind/cfi_modules.h"
#include "unwind/dwfl_unwinder.h"
#include "unwind/target_dwfl.h"
#include "unwind/unwinder.h"

namespace profctl {

class TableUnwinder : public Unwinder {
 public:
  struct Counts {
    uint64_t tables = 0;   // snapshots unwound by the tables alone
    uint64_t libdwfl = 0;  // snapshots libdwfl unwound (the tables stopped, or are off)
    std::array<uint64_t, kCfiStopCount> stops{};  // why the tables stopped, by CfiStop
    uint64_t checked = 0;     // PROFCTL_UNWIND_TABLES=check: table walks redone by libdwfl
    uint64_t mismatched = 0;  // of which libdwfl gave other pcs
  };

  // `dwfl` must outlive the unwinder. The tables are read from `cache` (or compiled and
  // stored there) when the first snapshot is unwound, and again when dwfl's modules change.
  TableUnwinder(TargetDwfl& dwfl, CfiCache cache);
  explicit TableUnwinder(TargetDwfl& dwfl);  // the cache the environment names
  ~TableUnwinder() override;
  TableUnwinder(const TableUnwinder&) = delete;
  TableUnwinder& operator=(const TableUnwinder&) = delete;

  UnwindResult unwind(const Snapshot& snap) override;
  const Counts& counts() const { return counts_; }

 private:
  // The full walk through the tables, or nullopt when libdwfl must do it.
  std::optional<UnwindResult> walk_tables(const Snapshot& snap);
  void log_tables() const;

  TargetDwfl& dwfl_;
  DwflUnwinder fallback_;
  CfiCache cache_;
  bool enabled_ = true;
  bool check_ = false;
  std::optional<CfiModules> modules_;
  uint64_t generation_ = 0;
  std::vector<uint64_t> pcs_;
  Counts counts_;
};

}  // namespace profctl
