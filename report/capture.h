// SPDX-License-Identifier: MIT
// Capture: the in-memory form of capture.json ("profctl.capture/1", docs/DESIGN.md "Output").
// Writers take a finished Capture (STYLE 19); `profctl report` reads one back.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "symbolize/frame.h"

namespace profctl {

inline constexpr const char* kCaptureSchema = "profctl.capture/1";
inline constexpr int kCaptureSchemaMajor = 1;

struct CaptureTarget {
  pid_t pid = 0;
  std::string exe;
  std::vector<std::string> cmdline;

  bool operator==(const CaptureTarget&) const = default;
};

struct CaptureWindow {
  std::string start;  // RFC 3339 UTC, e.g. "2026-11-24T10:00:00Z"
  double duration_s = 0;
  // Sampled captures: the --rate asked for and the tick rate achieved over the window
  // (0: not a sampled capture, or a capture.json that predates them).
  double requested_hz = 0;
  double achieved_hz = 0;

  bool operator==(const CaptureWindow&) const = default;
};

// How long the target was held stopped (docs/DESIGN.md "Performance principles").
struct PauseStats {
  uint64_t world_stopped_ns = 0;  // first interrupt to last resume
  uint64_t stop_ns = 0;           // interrupting + waiting for every stop
  uint64_t capture_ns = 0;        // registers + stack copies
  uint64_t resume_ns = 0;         // resuming every thread
  size_t threads = 0;
  uint64_t stack_bytes = 0;  // bytes copied in all
  // For sampling sessions: per-thread pauses, median and worst.
  std::optional<uint64_t> median_ns;
  std::optional<uint64_t> worst_ns;
  std::optional<uint64_t> samples;

  bool operator==(const PauseStats&) const = default;
};

struct CaptureThread {
  pid_t tid = 0;
  std::string name;
  std::string state;                        // one letter as in /proc stat: R S D T t Z
  std::optional<std::string> wait_syscall;  // syscall name when blocked in one ("futex")
  std::optional<uint64_t> wait_address;     // futex address (first argument)
  // In a wait the block/mutex probes timed: the probed glibc function and how long the
  // thread had been in it when the world stopped.
  std::optional<std::string> waiting_in;
  std::optional<uint64_t> waiting_ns;
  uint64_t cpu_ns = 0;
  std::vector<Frame> frames;  // innermost first
  bool truncated = false;
  std::string truncated_reason;

  bool operator==(const CaptureThread&) const = default;
};

struct SampleType {
  std::string type;
  std::string unit;

  bool operator==(const SampleType&) const = default;
};

struct Sample {
  std::vector<int64_t> values;
  std::vector<Frame> frames;                  // innermost first, inlined frames before their caller
  std::map<std::string, std::string> labels;  // tid, thread_name, state, ...
  // Sampled profiles that scale their values (heap): the unscaled values, one per sample
  // type, as Go's debug=1 text prints them. Empty for every other profile.
  std::vector<int64_t> raw_values = {};  // "= {}": no -Wmissing-field-initializers at {v, f, l}

  bool operator==(const Sample&) const = default;
};

// One stack of the heap profile's peak or long-lived section. "Scaled" values are estimates
// for the whole program (Go's scaleHeapSample); raw ones count the sampled allocations.
struct CaptureHeapStack {
  int64_t objects = 0;      // scaled
  int64_t bytes = 0;        // scaled
  int64_t raw_objects = 0;  // sampled allocations
  int64_t raw_bytes = 0;
  std::vector<Frame> frames;
  // Long-lived section only: the age at the end of the capture of the stack's oldest
  // allocation, and the thread that made it.
  std::optional<uint64_t> oldest_age_ns = {};
  std::optional<pid_t> oldest_tid = {};

  bool operator==(const CaptureHeapStack&) const = default;
};

// Totals and stacks (largest scaled bytes first) of the peak or long-lived section.
struct CaptureHeapSet {
  int64_t objects = 0;
  int64_t bytes = 0;
  int64_t raw_objects = 0;
  int64_t raw_bytes = 0;
  std::vector<CaptureHeapStack> stacks;

  bool operator==(const CaptureHeapSet&) const = default;
};

// What the heap profile has beyond Go's: the peak of in-use memory during the capture with
// the stacks that held it, the allocations still live and older than min_age at the end
// (leak candidates), and the tracker's counters (sampled_allocs, sampled_frees,
// unknown_frees, missed_frees, live_at_end, ring_dropped, queue_dropped, table_dropped).
struct CaptureHeap {
  uint64_t peak_at_ns = 0;  // since the start of the capture
  CaptureHeapSet peak;
  uint64_t leak_min_age_ns = 0;
  CaptureHeapSet leaks;
  std::map<std::string, uint64_t> counters;

  bool operator==(const CaptureHeap&) const = default;
};

// What a profile lost between the target and the report, counted once when the capture is
// assembled (the one source: every writer and warning prints these numbers as they are).
// `dropped` of the profile is lost(). A profile that lost anything is partial: its totals
// are lower bounds.
struct ProfileLoss {
  uint64_t recorded = 0;       // events counted in the profile
  uint64_t ring_dropped = 0;   // probe records the target could not write: the ring was full
  uint64_t queue_dropped = 0;  // read, but not unwound: unwinding could not keep up
  uint64_t capped = 0;         // not counted: one of profctl's bounds (rows, live pointers)

  uint64_t lost() const;  // saturating sum of the drops
  uint64_t seen() const;  // recorded + lost, saturating
  // lost / seen, in [0, 1]; 0 when nothing was seen.
  double lost_share() const;

  bool operator==(const ProfileLoss&) const = default;
};

struct Profile {
  std::vector<SampleType> sample_types;
  std::optional<SampleType> period_type;
  int64_t period = 0;
  std::vector<Sample> samples;
  uint64_t dropped = 0;  // events lost (unwinding could not keep up, ring full, ...)
  // Where the lost events went, for profiles that know (the probe profiles); dropped is
  // then loss->lost(). Absent in captures written before it was recorded.
  std::optional<ProfileLoss> loss;
  // The sample type viewers show first (pprof's default_sample_type), e.g. "inuse_space".
  std::optional<std::string> default_sample_type;
  std::optional<CaptureHeap> heap;  // the heap profile only
  // Events counted in their stack's row without per-event labels (past the detail cap).
  uint64_t detail_omitted = 0;

  bool operator==(const Profile&) const = default;
};

// An executable segment of a module in the target's address space (page-aligned, as
// /proc/PID/maps shows it): pprof's Mapping.
struct CaptureSegment {
  uint64_t start = 0;
  uint64_t limit = 0;
  uint64_t file_offset = 0;  // file offset of `start`

  bool operator==(const CaptureSegment&) const = default;
};
// The position of sample type `name` in p.sample_types; with an empty name, of p's
// default_sample_type. nullopt when there is no such type.
inline std::optional<size_t> find_sample_type(const Profile& p, const std::string& name) {
  const std::string& want = name.empty() ? p.default_sample_type.value_or("") : name;
  for (size_t i = 0; i < p.sample_types.size() && !want.empty(); ++i) {
    if (p.sample_types[i].type == want) {
      return i;
    }
  }
  return std::nullopt;
}

// The sample type a report ranks and draws by: for a profile with a default type (heap),
// `sample_index` when the profile has it, else the default; for the others the last type
// (cpu/nanoseconds, wall/nanoseconds, ...), as profile_text ranks. 0 for a profile without
// sample types, which callers check.
inline size_t main_sample_type(const Profile& p, const std::string& sample_index = {}) {
  if (p.default_sample_type) {
    if (auto i = find_sample_type(p, sample_index)) {
      return *i;
    }
    if (auto i = find_sample_type(p, "")) {
      return *i;
    }
  }
  return p.sample_types.empty() ? 0 : p.sample_types.size() - 1;
}

struct CaptureModule {
  std::string path;
  uint64_t start = 0;  // the whole module, first to last mapping
  uint64_t limit = 0;
  uint64_t file_offset = 0;
  std::string build_id;
  // The executable segments (PF_X PT_LOADs), where its code is. Empty in captures written
  // before they were recorded, and when the module's ELF could not be read.
  std::vector<CaptureSegment> exec_segments;

  bool operator==(const CaptureModule&) const = default;
};

struct Capture {
  std::string schema = kCaptureSchema;
  std::string tool_version;
  CaptureTarget target;
  CaptureWindow window;
  std::map<std::string, std::string> options;  // the options the capture ran with
  PauseStats pause;
  std::vector<CaptureThread> threads;
  std::map<std::string, Profile> profiles;  // kind -> profile
  std::vector<CaptureModule> modules;
  std::vector<std::string> warnings;  // e.g. "target exited during the capture"

  bool operator==(const Capture&) const = default;
};

}  // namespace profctl
