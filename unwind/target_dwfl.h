// SPDX-License-Identifier: MIT
// TargetDwfl: the one libdwfl session of a target address space (docs/DESIGN.md "libdwfl" a).
// Modules are reported once from /proc/PID/maps and refreshed only when the maps change; ELF files
// are opened through /proc/PID/root so a process in a container resolves its own files.
// Shared by unwind/ (CFI) and symbolize/ (names, lines, inlines). Use from one thread.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/result.h"

typedef struct Dwfl Dwfl;                // NOLINT: libdwfl's C handle
typedef struct Dwfl_Module Dwfl_Module;  // NOLINT: libdwfl's C handle

namespace profctl {

struct DwflOptions {
  // Let libdwfl ask debuginfod (DEBUGINFOD_URLS) for missing debug info. Off by default:
  // it can block for seconds on the network.
  bool debuginfod = false;
};

// One executable PT_LOAD of a module in the target's address space: [p_vaddr, p_vaddr +
// p_memsz) moved by the load bias, and file_offset = p_offset, the file offset of `start`.
struct ModuleSegment {
  uint64_t start = 0;
  uint64_t limit = 0;
  uint64_t file_offset = 0;
};

struct ModuleInfo {
  std::string path;    // as the target names it (/proc/PID/maps), or "[vdso]"
  uint64_t start = 0;  // target address range of the module
  uint64_t end = 0;
  uint64_t file_offset = 0;  // file offset of the mapping at start (pprof Mapping.file_offset)
  std::string build_id;      // hex, empty when none
  // The executable segments from the ELF program headers (PF_X PT_LOADs) moved by the
  // module's load bias. Empty when the ELF could not be read.
  std::vector<ModuleSegment> exec_segments;
};

// The module's GNU build-id in hex; "" when it has none.
std::string module_build_id(Dwfl_Module* mod);

// The latest /proc/PID/maps text of one live process that any of its TargetDwfls read,
// shared by them all: the worker that unwinds a sample after the process has exited cannot
// read its maps any more, but can report a library loaded late (dlopen) from the text
// another TargetDwfl of the process (the sampler's) read while it lived.
struct MapsMemo {
  std::mutex mu;
  std::string text;  // guarded by mu
};

class TargetDwfl {
 public:
  ~TargetDwfl();
  TargetDwfl(const TargetDwfl&) = delete;
  TargetDwfl& operator=(const TargetDwfl&) = delete;

  // Reports the modules of live process `pid` and loads their ELF files at once (so a
  // target that exits later still symbolizes).
  static Result<std::unique_ptr<TargetDwfl>> for_process(pid_t pid, const DwflOptions& opts);
  // The modules of process `pid` from its /proc/PID/maps text read earlier: the costly
  // part (opening and loading every ELF) happens here, off the moment the text was read,
  // and works after the process has gone (files are then opened by their own path, not
  // through /proc/PID/root; its vdso and deleted files are then not found).
  static Result<std::unique_ptr<TargetDwfl>> for_maps(pid_t pid, std::string maps_text,
                                                      const DwflOptions& opts);
  // Offline: ELF files with no process (tests, golden files).
  static Result<std::unique_ptr<TargetDwfl>> for_files(const std::vector<std::string>& paths);

  // Re-reads /proc/PID/maps if it changed since the last report (dlopen/dlclose). When the
  // process can no longer show them (gone, a zombie, torn down at its exit), reports the
  // shared memo's newer text instead, if there is one.
  Result<void> refresh();
  // Whether pc lies in a reported module that has an ELF file (see the .cpp).
  bool has_module_at(uint64_t pc) const;
  // Shares `memo` with the other TargetDwfls of the same process (see MapsMemo).
  void share_maps(std::shared_ptr<MapsMemo> memo);

  Dwfl* get() const;
  // Changes whenever the module list was re-reported (refresh() found new maps).
  uint64_t generation() const;
  pid_t pid() const;
  std::vector<ModuleInfo> modules() const;

 private:
  struct Impl;
  explicit TargetDwfl(std::unique_ptr<Impl> impl);
  Result<void> from_memo();  // refresh() for a process that can no longer show its maps
  std::unique_ptr<Impl> impl_;
};

}  // namespace profctl
