// SPDX-License-Identifier: MIT
// capture.json writer: docs/DESIGN.md "Output", schema/profctl.capture-1.schema.json.
#pragma once

#include <ostream>

#include "report/capture.h"

namespace profctl {

// Writes `capture` as one pretty-printed (2-space) "profctl.capture/1" document.
// Addresses and offsets are hex strings ("0x7f3a2c001234"); unknown function/file/line are
// null. Optional fields (wait_syscall, wait_address, truncated_reason, pause median/worst/
// samples, period_type) are left out when unset. Strings that are not valid UTF-8 (paths
// are bytes on Linux) are written with U+FFFD in place of the bad bytes.
void write_capture_json(const Capture& capture, std::ostream& out);

}  // namespace profctl
