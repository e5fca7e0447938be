// SPDX-License-Identifier: MIT
// The embedded trampoline blob (probe/blob/, linked into one flat image at build time and
// checked to carry no relocations). Its first bytes are struct probe_blob_header.
#pragma once

#include <cstdint>
#include <span>

namespace profctl::probe {

std::span<const uint8_t> blob_image();

}  // namespace profctl::probe
