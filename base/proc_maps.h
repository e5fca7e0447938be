// SPDX-License-Identifier: MIT
// /proc/PID/maps, parsed once for everyone: attach/ (stack bounds, remote syscalls) and
// unwind/'s TargetDwfl (modules). The text is the target's, so untrusted: a line that does
// not parse is skipped.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace profctl {

struct MapEntry {
  uint64_t start = 0;
  uint64_t end = 0;
  bool readable = false;
  bool executable = false;
  uint64_t offset = 0;
  std::string path;       // may be empty (anonymous), "[stack]", "[vdso]", ...
  bool writable = false;  // (after the older fields: aggregate initialisation keeps its order)
  bool shared = false;    // MAP_SHARED (perms "s")
};

// Every mapping, in the kernel's order (sorted by start).
std::vector<MapEntry> parse_maps(std::string_view text);
// The mapping holding `addr`, or nullptr. `maps` must be sorted by start (as the kernel
// prints them).
const MapEntry* find_mapping(const std::vector<MapEntry>& maps, uint64_t addr);

// /proc/PID/statm's first field: the pages the address space spans (mm->total_vm).
std::optional<uint64_t> parse_statm_size(std::string_view text);
// parse_statm_size of a live process: a mapping made or removed changes it, and reading it
// costs a fraction of reading the maps (no line per mapping). 0 once the process has let go
// of its address space (exiting, a zombie); nullopt when unreadable.
std::optional<uint64_t> read_mapped_pages(pid_t pid);

}  // namespace profctl
