// SPDX-License-Identifier: MIT
#include "probe/code_area.h"

#include <algorithm>

namespace profctl::probe {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kLowest = 0x10000;                     // above vm.mmap_min_addr
constexpr uint64_t kHighest = 0x7ffffffff000ULL;          // end of the 47-bit user space
constexpr uint64_t kReach = (1ULL << 31) - (1ULL << 20);  // rel32 with a 1 MiB margin

}  // namespace

std::optional<uint64_t> find_code_area(const std::vector<MapEntry>& maps, uint64_t module_lo,
                                       uint64_t module_hi, size_t size) {
  if (module_hi <= module_lo || size == 0 || module_hi - module_lo + size >= kReach) {
    return std::nullopt;
  }
  // Every A with A + size <= module_lo + kReach and A >= module_hi - kReach reaches.
  uint64_t want_lo = module_hi > kReach ? module_hi - kReach : 0;
  uint64_t want_hi = module_lo + kReach - size;  // the last acceptable A
  std::optional<uint64_t> best;
  uint64_t best_distance = UINT64_MAX;
  uint64_t gap_lo = kLowest;
  auto consider = [&](uint64_t lo, uint64_t hi) {  // gap [lo, hi)
    lo = std::max({lo, want_lo, kLowest});
    lo = (lo + kPage - 1) / kPage * kPage;
    if (hi > kHighest) {
      hi = kHighest;
    }
    if (hi < lo + size) {
      return;
    }
    uint64_t last = std::min((hi - size) / kPage * kPage, want_hi / kPage * kPage);
    if (last < lo) {
      return;
    }
    // Closest to the module: the top of a gap below it, the bottom of a gap above it.
    uint64_t a = last + size <= module_lo ? last : lo;
    uint64_t distance = a < module_lo ? module_lo - a : a - module_lo;
    if (distance < best_distance) {
      best_distance = distance;
      best = a;
    }
  };
  for (const MapEntry& m : maps) {
    if (m.start > gap_lo) {
      consider(gap_lo, m.start);
    }
    gap_lo = std::max(gap_lo, m.end);
  }
  consider(gap_lo, kHighest);
  return best;
}

std::optional<std::pair<uint64_t, uint64_t>> module_range(const std::vector<MapEntry>& maps,
                                                          const std::string& path) {
  std::optional<std::pair<uint64_t, uint64_t>> r;
  for (const MapEntry& m : maps) {
    if (m.path != path) {
      continue;
    }
    if (!r) {
      r = std::make_pair(m.start, m.end);
    } else {
      r->first = std::min(r->first, m.start);
      r->second = std::max(r->second, m.end);
    }
  }
  return r;
}

}  // namespace profctl::probe
