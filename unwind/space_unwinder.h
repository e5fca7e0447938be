// SPDX-License-Identifier: MIT
// SpaceUnwinder: unwinds every snapshot with the modules of its own address space
// (Snapshot::space), for captures that follow child processes: a shell's samples are
// unwound against dash, its child's against the program it exec'd.
//
// Loading a process's modules costs milliseconds; a child stopped for its first sample
// must not wait for it. So the sampling thread only records where each space's modules
// are (its pid and /proc/PID/maps text, SpaceModules::add, microseconds), and the modules
// are loaded from that off the stop path: by the unwinding worker at the space's first
// snapshot (TargetDwfl::for_maps). When the worker is done, the modules it loaded go back
// to SpaceModules for symbolizing (one Dwfl used by one thread at a time), so each image is
// loaded once; one never unwound is loaded for symbolizing then (for_maps works after the
// process has gone).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "unwind/table_unwinder.h"
#include "unwind/target_dwfl.h"
#include "unwind/unwinder.h"

namespace profctl {

// Where each address space's modules are: thread-safe.
class SpaceModules {
 public:
  struct Source {
    pid_t pid = 0;
    std::string maps_text;  // /proc/PID/maps, the latest read
  };
  explicit SpaceModules(DwflOptions opts) : opts_(opts) {}
  void add(uint32_t space, Source src);
  // A newer read of a space's maps (dlopen): kept when the process shows any.
  void update(uint32_t space, std::string maps_text);
  std::optional<Source> get(uint32_t space) const;
  std::map<uint32_t, Source> all() const;
  size_t size() const;
  const DwflOptions& options() const { return opts_; }
  // Modules a SpaceUnwinder loaded, handed back when it is destroyed (its worker is done).
  void keep_loaded(uint32_t space, std::unique_ptr<TargetDwfl> dwfl);
  std::unique_ptr<TargetDwfl> take_loaded(uint32_t space);

 private:
  DwflOptions opts_;
  mutable std::mutex mu_;
  std::map<uint32_t, Source> spaces_;
  std::map<uint32_t, std::unique_ptr<TargetDwfl>> loaded_;
};

class SpaceUnwinder : public Unwinder {
 public:
  // `fallback`: the target's own modules, for space 0 and spaces never recorded.
  SpaceUnwinder(TargetDwfl& fallback, SpaceModules& spaces)
      : fallback_(fallback), spaces_(spaces) {}
  ~SpaceUnwinder() override;  // hands the modules it loaded back to `spaces`
  SpaceUnwinder(const SpaceUnwinder&) = delete;
  SpaceUnwinder& operator=(const SpaceUnwinder&) = delete;
  UnwindResult unwind(const Snapshot& snap) override;

 private:
  TargetDwfl& dwfl_of(uint32_t space);

  TargetDwfl& fallback_;
  SpaceModules& spaces_;
  std::map<uint32_t, std::unique_ptr<TargetDwfl>> loaded_;  // null: could not be loaded
  std::map<TargetDwfl*, std::unique_ptr<TableUnwinder>> unwinders_;
};

}  // namespace profctl
