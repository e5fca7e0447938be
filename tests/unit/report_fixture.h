// SPDX-License-Identifier: MIT
// A Capture with every field set and every frame shape (known, unknown, inlined, outside
// any module), shared by the report_* tests.
#pragma once

#include <filesystem>
#include <string>

#include "report/capture.h"

namespace profctl::testing {

// The repository root, found from this file's path (tests/unit/report_fixture.h).
inline std::filesystem::path repo_root() {
  return std::filesystem::path(__FILE__).parent_path().parent_path().parent_path();
}

inline constexpr const char* kApp = "/usr/bin/app";
inline constexpr const char* kLibc = "/usr/lib/x86_64-linux-gnu/libc.so.6";

inline Frame frame(uint64_t pc, const std::string& module, uint64_t offset,
                   std::optional<std::string> function, std::optional<std::string> file = {},
                   std::optional<int> line = {}, bool inlined = false) {
  return Frame{pc, module, offset, std::move(function), std::move(file), line, inlined, {}};
}

// The app is loaded at 0x55d0c0a00000, libc at 0x7f3a2c027000 (file offset 0x28000).
inline Frame futex_wait() {
  return frame(0x7f3a2c0b1234, kLibc, 0x8a234, "__futex_abstimed_wait_common");
}
inline Frame burn() { return frame(0x55d0c0a01100, kApp, 0x1100, "burn()", "src/burn.cpp", 7); }
inline Frame worker_run() {
  return frame(0x55d0c0a01234, kApp, 0x1234, "Worker::run()", "src/worker.cpp", 42);
}
// helper() inlined into Worker::run() at 0x55d0c0a01300.
inline Frame helper_inlined() {
  return frame(0x55d0c0a01300, kApp, 0x1300, "helper()", "src/worker.h", 10, true);
}
inline Frame worker_run_at_helper() {
  return frame(0x55d0c0a01300, kApp, 0x1300, "Worker::run()", "src/worker.cpp", 45);
}
inline Frame app_main() { return frame(0x55d0c0a00f00, kApp, 0xf00, "main", "src/main.cpp", 12); }
inline Frame unknown_in_app() { return frame(0x55d0c0a02000, kApp, 0x2000, std::nullopt); }
// In no module of Capture::modules.
inline Frame vdso_clock() { return frame(0x7ffd12345678, "[vdso]", 0x678, "__vdso_clock_gettime"); }

// A heap profile at --mem-rate 1024 whose scaled values are Go's scaleHeapSample of the raw
// ones (golden values from Go 1.19: (3, 300) -> (32, 3224), (2, 200) -> (21, 2149),
// (1, 4096) -> (1, 4172)).
inline Profile heap_profile() {
  Profile heap;
  heap.sample_types = {{"alloc_objects", "count"},
                       {"alloc_space", "bytes"},
                       {"inuse_objects", "count"},
                       {"inuse_space", "bytes"}};
  heap.default_sample_type = "inuse_space";
  heap.period_type = SampleType{"space", "bytes"};
  heap.period = 1024;
  heap.samples = {
      {{32, 3224, 21, 2149}, {worker_run(), app_main()}, {}, {3, 300, 2, 200}},
      {{1, 4172, 1, 4172},
       {helper_inlined(), worker_run_at_helper(), app_main()},
       {},
       {1, 4096, 1, 4096}},
      {{21, 2149, 0, 0}, {burn(), worker_run(), app_main()}, {}, {2, 200, 0, 0}},
  };
  CaptureHeap h;
  h.peak_at_ns = 1'500'000'000;
  h.peak = {33, 7396, 4, 4396, {}};
  h.peak.stacks = {{1, 4172, 1, 4096, {helper_inlined(), worker_run_at_helper(), app_main()}},
                   {32, 3224, 3, 300, {worker_run(), app_main()}}};
  h.leak_min_age_ns = 10'000'000'000;
  h.leaks = {1, 4172, 1, 4096, {}};
  h.leaks.stacks = {{1,
                     4172,
                     1,
                     4096,
                     {helper_inlined(), worker_run_at_helper(), app_main()},
                     25'000'000'000,
                     4243}};
  h.counters = {{"sampled_allocs", 6}, {"sampled_frees", 3}, {"unknown_frees", 7},
                {"missed_frees", 0},   {"live_at_end", 3},   {"ring_dropped", 0},
                {"table_dropped", 0}};
  heap.heap = h;
  return heap;
}

inline Capture rich_capture() {
  Capture c;
  c.tool_version = "0.1.0";
  c.target = {4242, kApp, {"app", "--flag", "with space"}};
  c.window = {"2026-11-24T10:00:00Z", 30.5};
  c.options = {{"profiles", "cpu,threads"}, {"rate", "99"}};
  c.pause = {410000, 150000, 200000, 60000, 3, 196608, 12000, 45000, 2970};

  CaptureThread t1;
  t1.tid = 4242;
  t1.name = "app";
  t1.state = "S";
  t1.wait_syscall = "futex";
  t1.wait_address = 0x7f3a2c0041a0;
  t1.cpu_ns = 1'200'000'000;
  t1.frames = {futex_wait(), helper_inlined(), worker_run_at_helper(), unknown_in_app(),
               app_main()};
  CaptureThread t2;
  t2.tid = 4243;
  t2.name = "worker-1";
  t2.state = "R";
  t2.cpu_ns = 5'000'000;
  t2.frames = {burn(), worker_run()};
  t2.truncated = true;
  t2.truncated_reason = "stack copy limit (64 KiB) reached";
  CaptureThread t3;
  t3.tid = 4244;
  t3.name = "io \"disk\"";
  t3.state = "D";
  c.threads = {t1, t2, t3};

  Profile cpu;
  cpu.sample_types = {{"samples", "count"}, {"cpu", "nanoseconds"}};
  cpu.period_type = SampleType{"cpu", "nanoseconds"};
  cpu.period = 10'101'010;
  cpu.dropped = 3;
  cpu.samples = {
      {{2, 20'202'020},
       {burn(), worker_run(), app_main()},
       {{"tid", "4243"}, {"thread", "worker-1"}}},
      {{1, 10'101'010}, {helper_inlined(), worker_run_at_helper(), app_main()}, {{"tid", "4242"}}},
      {{3, 30'303'030}, {burn(), worker_run(), app_main()}, {{"tid", "4244"}}},
      {{1, 10'101'010}, {unknown_in_app(), app_main()}, {{"tid", "4242"}}},
      {{4, 40'404'040}, {vdso_clock(), burn(), worker_run(), app_main()}, {}},
  };
  c.profiles = {{"cpu", cpu}, {"heap", heap_profile()}};

  c.modules = {
      {kLibc, 0x7f3a2c027000, 0x7f3a2c1bc000, 0x28000, "b7f1c3d2e4a5968778695a4b3c2d1e0f", {}},
      {kApp, 0x55d0c0a00000, 0x55d0c0a40000, 0, "0123456789abcdef0123456789abcdef01234567", {}}};
  c.warnings = {"target exited during the capture"};
  return c;
}

}  // namespace profctl::testing
