// SPDX-License-Identifier: MIT
// --fail-if: the thresholds a CI job gates a diff on, e.g. 'cpu:parse_request>+10%',
// 'heap.inuse_space:total>+20%', 'cpu:self:memcpy>+5ms', 'wall:total>+2pp'.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "report/profile_diff.h"

namespace profctl {

// KIND[.TYPE]:SUBJECT OP THRESHOLD
//   KIND       a profile kind (cpu, wall, heap, threadcreate, ...)
//   TYPE       one of its sample types (heap.alloc_space); default: the profile's main type
//   SUBJECT    "total" (the whole profile), "self:FUNCTION" (the function as the innermost
//              frame) or FUNCTION (anywhere in the stack: its total). FUNCTION is a
//              name as people type it (report/function_match.h): as the reports print it,
//              or a C++ function without its parameter list or namespaces ("step" for
//              "ns::Engine::step(long) const"), or /REGEX/; a name in several modules is
//              the sum of them, a name that fits two functions is an error.
//   OP         > >= < <=, comparing the change with the threshold
//   THRESHOLD  [+|-]NUMBER then "%" (of the base value), "pp" (percentage points of the
//              profile's total), a time unit (ns us ms s) or a size unit (B KiB MiB GiB,
//              kB MB GB), or nothing (the type's own unit: a count, ns or bytes)
struct Gate {
  enum class Subject { kTotal, kFunctionTotal, kFunctionSelf };
  enum class Measure { kPercent, kPoints, kAbsolute };
  enum class UnitClass { kNone, kTime, kBytes };

  std::string text;  // as given, for messages
  std::string kind;
  std::string type;  // empty: the main type
  Subject subject = Subject::kTotal;
  std::string function;
  bool greater = true;
  bool or_equal = false;
  Measure measure = Measure::kPercent;
  UnitClass unit_class = UnitClass::kNone;
  double threshold = 0;  // percent, points, or the absolute change in ns / bytes / the unit
};

// Fails with a message that says what is wrong and what the form is.
Result<Gate> parse_gate(std::string_view text);

struct GateResult {
  bool crossed = false;
  double observed = 0;  // the change in the gate's measure (infinite: new against a zero base)
  std::string message;  // "cpu:f>+10%: f total 1.00s -> 2.00s (+100.00%, +16.67pp)"
};

// Evaluates a gate on a diff. Fails (a usage error for the caller) when the kind is not in
// both captures, the type is not in the profile, the function is in neither capture, or an
// absolute threshold's unit does not fit the type's (a size for a time), or the name is
// ambiguous (the message lists the candidates).
Result<GateResult> evaluate_gate(const Gate& gate, const CaptureDiff& diff);

}  // namespace profctl
