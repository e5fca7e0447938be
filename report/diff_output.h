// SPDX-License-Identifier: MIT
// A CaptureDiff for people (text) and for scripts (JSON, "profctl.diff/1", schema/
// profctl.diff-1.schema.json).
#pragma once

#include <cstddef>
#include <ostream>
#include <string>
#include <vector>

#include "report/capture.h"
#include "report/fail_if.h"
#include "report/profile_diff.h"

namespace profctl {

inline constexpr const char* kDiffSchema = "profctl.diff/1";

// One side of the diff, as the header and the JSON name it.
struct DiffSide {
  std::string path;
  const Capture* capture = nullptr;
};

struct GateOutcome {
  Gate gate;
  GateResult result;
};

// Per kind: the totals of every sample type, then for the main type the top_n functions by
// total change (regressions, largest first; then improvements) and the top_n stacks, each
// with the base and new values, the change in the unit, in percent and in percentage
// points; then every gate and whether it was crossed.
void write_diff_text(const CaptureDiff& diff, const DiffSide& base, const DiffSide& now,
                     const std::vector<GateOutcome>& gates, size_t top_n, std::ostream& out);

// Everything: every sample type, every function and stack with a value in either capture.
void write_diff_json(const CaptureDiff& diff, const DiffSide& base, const DiffSide& now,
                     const std::vector<GateOutcome>& gates, const std::string& tool_version,
                     std::ostream& out);

}  // namespace profctl
