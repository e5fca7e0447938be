// SPDX-License-Identifier: MIT
#include "cli/heap_options.h"

#include <array>
#include <charconv>
#include <cmath>

#include "base/user_error.h"
#include "cli/capture_command.h"
#include "cli/common.h"

namespace profctl::cli {
namespace {

constexpr std::array<const char*, 4> kHeapSampleTypes = {"alloc_objects", "alloc_space",
                                                         "inuse_objects", "inuse_space"};

[[noreturn]] void bad_mem_rate(const std::string& text) {
  throw UserError(ExitCode::kUsage, "bad --mem-rate '" + text + "'",
                  "give the average bytes between sampled allocations, at least 1 (1 records "
                  "every allocation), e.g. 512K (the default), 64K, 1M, 4096");
}

}  // namespace

void add_heap_capture_options(CLI::App& app, HeapOptionsCli& o) {
  app.add_option("--mem-rate", o.mem_rate,
                 "heap: average bytes allocated between sampled allocations (1: every one)")
      ->capture_default_str();
  app.add_option("--leak-age", o.leak_age,
                 "heap: allocations still live at the end and this old are listed as "
                 "long-lived")
      ->capture_default_str();
  app.add_option("--probe-stack-bytes", o.probe_stack_bytes,
                 "heap: bytes of stack copied per recorded allocation (512 to 1M)")
      ->capture_default_str();
  app.add_option("--probe-ring-bytes", o.probe_ring_bytes,
                 "heap, block, mutex: size of the ring the probes write their records into "
                 "(64K to 4G; a thread that finds it full waits for profctl to read)")
      ->capture_default_str();
  app.add_flag("--probe-lossy", o.probe_lossy,
               "heap, block, mutex: a thread that finds the ring full drops its record "
               "(counted in every output) instead of waiting for profctl to read");
  add_sample_index_option(app, o.sample_index);
}

void add_sample_index_option(CLI::App& app, std::string& sample_index) {
  app.add_option("--sample-index", sample_index,
                 "heap: the value for folded output and the text ranking (alloc_objects, "
                 "alloc_space, inuse_objects, inuse_space)")
      ->capture_default_str();
}

HeapOptions resolve_heap_options(const HeapOptionsCli& o) {
  HeapOptions h;
  h.mem_rate = parse_mem_rate(o.mem_rate);
  h.leak_age_ns = parse_leak_age_ns(o.leak_age);
  h.sample_index = check_sample_index(o.sample_index);
  const uint64_t psb = parse_mem_rate(o.probe_stack_bytes);
  if (psb < 512 || psb > (1u << 20)) {
    throw UserError(ExitCode::kUsage, "bad --probe-stack-bytes '" + o.probe_stack_bytes + "'",
                    "use 512 to 1M (e.g. 16K)");
  }
  h.probe_stack_bytes = psb;
  // The shared area is mapped in the target too: more than 4G of it would be a burden there.
  const uint64_t prb = parse_mem_rate(o.probe_ring_bytes);
  if (prb < (64u << 10) || prb > (4ULL << 30)) {
    throw UserError(ExitCode::kUsage, "bad --probe-ring-bytes '" + o.probe_ring_bytes + "'",
                    "use 64K to 4G (e.g. 8M, the default; rounded up to a power of two)");
  }
  h.probe_ring_bytes = prb;
  h.probe_lossy = o.probe_lossy;
  return h;
}

uint64_t parse_mem_rate(const std::string& text) {
  // CLI11's own size parser, as --stack-bytes uses it: the same suffixes everywhere.
  std::string value = text;
  std::string err;
  try {
    err = CLI::AsSizeValue(false)(value);
  } catch (const CLI::ValidationError&) {  // not a number, unknown unit, overflow
    bad_mem_rate(text);
  }
  uint64_t v = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (!err.empty() || text.empty() || ec != std::errc() || end != value.data() + value.size() ||
      v < 1) {
    bad_mem_rate(text);
  }
  return v;
}

uint64_t parse_leak_age_ns(const std::string& text) {
  double s = 0;
  try {
    s = parse_duration_s(text);
  } catch (const UserError&) {
    throw UserError(ExitCode::kUsage, "bad --leak-age '" + text + "'",
                    "use e.g. 10s (the default), 500ms, 2m, 1h");
  }
  const double ns = s * 1e9;
  return ns >= 1.8e19 ? UINT64_MAX : static_cast<uint64_t>(ns + 0.5);
}

const std::string& check_sample_index(const std::string& name) {
  for (const char* t : kHeapSampleTypes) {
    if (name == t) {
      return name;
    }
  }
  throw UserError(ExitCode::kUsage, "unknown --sample-index '" + name + "'",
                  "use one of alloc_objects, alloc_space, inuse_objects, inuse_space");
}

}  // namespace profctl::cli
