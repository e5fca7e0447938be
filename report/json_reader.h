// SPDX-License-Identifier: MIT
// capture.json reader for `profctl report`: the inverse of write_capture_json.
#pragma once

#include <istream>

#include "base/result.h"
#include "report/capture.h"

namespace profctl {

// Reads one "profctl.capture/1" document. Strict: every field the schema requires must be
// there with its type; optional fields are type-checked when present; unknown fields are
// ignored (later 1.x writers may add some). Never throws; errors read
//   "not a profctl capture: <why>"             input is not JSON, not an object, no schema
//   "capture is from a newer profctl (...)"    "profctl.capture/N" with N > 1
//   "malformed profctl capture: <path>: <why>" e.g. threads[0].frames[2].pc: expected ...
Result<Capture> read_capture_json(std::istream& in);

}  // namespace profctl
