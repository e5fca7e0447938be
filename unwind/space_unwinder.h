// SPDX-License-Identifier: MIT
// SpaceUnwinder: unwinds every snapshot with the modules of its own address space
// (Snapshot::space), for captures that follow child processes: a shell's samples are
// unwound against dash, its child's against the program it exec'd. Each space's TargetDwfl
// is read by the sampling thread while the process is alive (SpaceModules::add) and used
// by the unwinding worker only (libdwfl is single-threaded per Dwfl).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "unwind/dwfl_unwinder.h"
#include "unwind/target_dwfl.h"
#include "unwind/unwinder.h"

namespace profctl {

class SpaceModules {
 public:
  void add(uint32_t space, std::unique_ptr<TargetDwfl> dwfl);
  // The modules of `space`; null when none were read for it.
  TargetDwfl* get(uint32_t space) const;

 private:
  mutable std::mutex mu_;
  std::map<uint32_t, std::unique_ptr<TargetDwfl>> spaces_;
};

class SpaceUnwinder : public Unwinder {
 public:
  // `fallback`: the target's own modules, for space 0 and spaces never read.
  SpaceUnwinder(TargetDwfl& fallback, const SpaceModules& spaces)
      : fallback_(fallback), spaces_(spaces) {}
  UnwindResult unwind(const Snapshot& snap) override;

 private:
  TargetDwfl& fallback_;
  const SpaceModules& spaces_;
  std::map<TargetDwfl*, std::unique_ptr<DwflUnwinder>> unwinders_;
};

}  // namespace profctl
