// SPDX-License-Identifier: MIT
// The difference between two captures of one program, per profile kind and sample type: per
// function (self and total) and per stack, in the profile's unit and in percentage points of
// each capture's total. Pure: no files, no formatting (diff_text.h, diff_json.h do that).
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include "report/capture.h"

namespace profctl {

struct DiffOptions {
  // Scale the base's values to the new capture's window (NEW duration / BASE duration), so
  // that a 10 s capture compares with a 30 s one. Gauges (in-use memory, the threads
  // profile) are states at the end, not sums over the window, and are never scaled.
  bool normalize = true;
  bool lines = false;  // functions and stacks by function and source line (--lines)
};

// One value in both captures. `base` is already scaled (DiffOptions::normalize); the shares
// are of each capture's own total, which scaling does not change.
struct DiffValue {
  double base = 0;
  double now = 0;
  double base_share = 0;  // percent
  double now_share = 0;

  double change() const { return now - base; }
  DiffValue& operator+=(const DiffValue& o);
  // Relative to the base, in percent: +100 is twice the base. nullopt when the base is 0
  // (a function that is new); 0 when both are.
  std::optional<double> change_percent() const;
  // Percentage points: the share in NEW less the share in BASE.
  double change_pp() const { return now_share - base_share; }
};

// Functions are told apart by name and module file name (not path: two builds of one
// program in two directories compare), so one name can have several rows (clock_gettime in
// the vDSO and in libc).
struct FunctionDiff {
  std::string name;    // report_detail::frame_name, with --lines " file:line" after it
  std::string module;  // the path in NEW (in BASE for a function NEW does not have)
  DiffValue self;      // innermost frame
  DiffValue total;     // anywhere in the stack, once per stack
};

struct StackDiff {
  std::vector<std::string> frames;  // root first, as folded stacks
  DiffValue value;
};

struct TypeDiff {
  SampleType type;
  double scale = 1;  // what the base's values were multiplied by
  DiffValue total;
  std::vector<FunctionDiff> functions;  // largest total change first (regressions first)
  std::vector<StackDiff> stacks;        // largest change first
};

struct KindDiff {
  std::string kind;
  size_t main = 0;              // the type reports show first (main_sample_type)
  std::vector<TypeDiff> types;  // in the profile's order; types missing in BASE are left out
};

struct CaptureDiff {
  double base_duration_s = 0;
  double now_duration_s = 0;
  bool normalized = false;      // some values were scaled (normalize and the windows differ)
  std::vector<KindDiff> kinds;  // the kinds present in both, by name
  std::vector<std::string> only_in_base;
  std::vector<std::string> only_in_now;
};

// True for sample types whose values are states at the end of the capture, not totals over
// its window: the heap's inuse_* and every type of the threads profile.
bool is_gauge(const std::string& kind, const SampleType& type);

// What the base's values of one sample type are multiplied by: NEW duration / BASE
// duration when normalising a type that sums over the window and both durations are
// positive, else 1.
double base_scale(const std::string& kind, const SampleType& type, double base_duration_s,
                  double now_duration_s, bool normalize);

// A DiffValue from raw sums, the scale and the captures' totals (unscaled).
DiffValue diff_value(double base, double now, double scale, double base_total, double now_total);

// `sample_index` picks the main type of a profile with a default (heap), as in the text.
CaptureDiff diff_captures(const Capture& base, const Capture& now, const DiffOptions& opts,
                          const std::string& sample_index = {});

// BASE as `go tool pprof -diff_base` should see it next to NEW: every value of a sample
// type that diff_captures scales multiplied by the same scale (rounded), and, when any was,
// the window's duration set to NEW's. Without normalising, BASE unchanged.
Capture scaled_base(const Capture& base, const Capture& now, bool normalize);

}  // namespace profctl
