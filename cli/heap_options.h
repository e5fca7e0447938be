// SPDX-License-Identifier: MIT
// The heap profile's options: --mem-rate and --leak-age (attach, run), --sample-index
// (attach, run, report). Parsed as strings and validated here, in one place, so that a bad
// value is a usage error (exit 1) with the valid forms, before anything touches a target.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

#include "probe/shared_area.h"
#include "profile/heap_profile.h"

namespace profctl::cli {

// What the capture and the writers take.
struct HeapOptions {
  uint64_t mem_rate = kDefaultMemRate;       // bytes between samples on average; 1 = all
  uint64_t leak_age_ns = kDefaultLeakAgeNs;  // long-lived: live at the end and this old
  std::string sample_index = "inuse_space";  // folded values and text ranking
  uint64_t probe_stack_bytes = 16 * 1024;    // stack copied per recorded event
  uint64_t probe_ring_bytes = probe::kDefaultRingBytes;  // the probes' ring
  bool probe_lossy = false;  // a full ring drops records instead of waiting
};

// The command line's text, before validation.
struct HeapOptionsCli {
  std::string mem_rate = "512K";
  std::string leak_age = "10s";
  std::string probe_stack_bytes = "16K";
  std::string probe_ring_bytes = "8M";
  bool probe_lossy = false;
  std::string sample_index = "inuse_space";
};

// --mem-rate, --leak-age and --sample-index, for attach and run.
void add_heap_capture_options(CLI::App& app, HeapOptionsCli& o);
// --sample-index alone, for report.
void add_sample_index_option(CLI::App& app, std::string& sample_index);

// Validates every field; throws UserError(kUsage).
HeapOptions resolve_heap_options(const HeapOptionsCli& o);

// "512K", "1M", "4096", "1" (suffixes as --stack-bytes: K, M, G, with or without B or iB,
// all powers of 1024); at least 1. Throws UserError(kUsage).
uint64_t parse_mem_rate(const std::string& text);
// A duration as -d takes it (10s, 500ms, 2m, 1h); more than 0. Throws UserError(kUsage).
uint64_t parse_leak_age_ns(const std::string& text);
// One of alloc_objects, alloc_space, inuse_objects, inuse_space; returns it. Throws
// UserError(kUsage) listing them.
const std::string& check_sample_index(const std::string& name);

}  // namespace profctl::cli
