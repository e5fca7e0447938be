// SPDX-License-Identifier: MIT
// Where to put the code area: a free range of the target's address space from which a
// jmp rel32 reaches every byte of the probed module and back.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "attach/proc.h"

namespace profctl::probe {

// A page-aligned address A such that [A, A + size) lies in a gap of `maps` (sorted, as
// /proc/PID/maps lists them) and every byte of it is within rel32 reach (with a margin)
// of every byte of the module [module_lo, module_hi). The closest such range to the
// module is chosen. Map it with MAP_FIXED_NOREPLACE: the target may have mapped something
// there since the maps were read.
std::optional<uint64_t> find_code_area(const std::vector<MapEntry>& maps, uint64_t module_lo,
                                       uint64_t module_hi, size_t size);

// [lo, hi) of all mappings of `path` (a module's first to last segment), if any.
std::optional<std::pair<uint64_t, uint64_t>> module_range(const std::vector<MapEntry>& maps,
                                                          const std::string& path);

}  // namespace profctl::probe
