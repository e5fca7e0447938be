// SPDX-License-Identifier: MIT
#include "base/eh_frame_hdr.h"

#include <algorithm>
#include <cstring>

namespace profctl {
namespace {

uint32_t load32(std::string_view b, size_t at) {
  uint32_t v = 0;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}

}  // namespace

// LSB "Exception Frame Header": version 1, the encodings of eh_frame_ptr, fde_count and the
// table, eh_frame_ptr, fde_count, then fde_count (initial location, FDE address) pairs
// sorted by location.
std::vector<uint64_t> parse_eh_frame_hdr(std::string_view b, uint64_t vaddr) {
  constexpr uint8_t kUdata4 = 0x03, kSdata4 = 0x0b, kPcrel = 0x10, kDatarel = 0x30;
  std::vector<uint64_t> out;
  if (b.size() < 12) {
    return out;
  }
  const auto enc = [&](size_t at) { return static_cast<uint8_t>(b[at]); };
  const bool sdata4_ptr = (enc(1) & 0x0f) == kSdata4 || (enc(1) & 0x0f) == kUdata4;
  if (enc(0) != 1 || !sdata4_ptr || (enc(2) != kUdata4 && enc(2) != kSdata4) ||
      enc(3) != (kDatarel | kSdata4) || (enc(1) & 0x70 & ~kPcrel) != 0) {
    return out;
  }
  const uint64_t count = load32(b, 8);
  if (count > (b.size() - 12) / 8) {
    return out;  // the table would run past the segment
  }
  out.reserve(count);
  for (uint64_t k = 0; k < count; ++k) {
    const auto rel = static_cast<int32_t>(load32(b, 12 + k * 8));
    out.push_back(vaddr + static_cast<int64_t>(rel));
  }
  std::sort(out.begin(), out.end());  // sorted already, unless the file lies
  return out;
}

}  // namespace profctl
