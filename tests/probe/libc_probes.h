// SPDX-License-Identifier: MIT
// LibcProbes: installs the probes on the test process's OWN libc, exactly as attach/ will
// in a target but with local memory writes instead of ptrace: a shared area, a code area
// mapped near libc.so.6, the image built for the real libc functions, and jmp (or int3)
// patches written over libc's text. The destructor restores every byte.
//
// Only safe while the process is single-threaded at install and removal (as a stopped
// world is for attach/).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "probe/probe_image.h"
#include "probe/shared_area.h"

namespace profctl::probe::testing {

struct LibcSite {
  std::string name;
  uint32_t kind;
  uint64_t address = 0;  // 0: look `name` up in libc; else a function of this process
  uint64_t size = 0;     // with address: the function's size
  uint32_t flags = 0;    // PROBE_SITE_*
};

// The allocation functions of glibc with their kinds (aligned_alloc before memalign: they
// are one function in glibc, so memalign becomes an alias).
std::vector<LibcSite> all_allocation_sites();

class LibcProbes {
 public:
  // far_code_area: map the code area out of rel32 reach, which forces the int3 fallback
  // (a SIGTRAP handler redirects to the trampoline).
  static Result<std::unique_ptr<LibcProbes>> install(const std::vector<LibcSite>& sites,
                                                     const SharedAreaOptions& options,
                                                     bool far_code_area = false);
  LibcProbes(const LibcProbes&) = delete;
  LibcProbes& operator=(const LibcProbes&) = delete;
  ~LibcProbes();

  // Disables the probes and restores libc's bytes (idempotent).
  void remove();

  SharedArea& area() { return area_; }
  const ProbeImage& image() const { return image_; }
  uint64_t address(const std::string& name) const { return addresses_.at(name); }
  std::string libc_path() const { return libc_path_; }

 private:
  explicit LibcProbes(SharedArea area) : area_(std::move(area)) {}

  SharedArea area_;
  void* code_ = nullptr;
  size_t code_size_ = 0;
  ProbeImage image_;
  std::map<std::string, uint64_t> addresses_;
  std::string libc_path_;
  bool patched_ = false;
};

}  // namespace profctl::probe::testing
