// SPDX-License-Identifier: MIT
// LibcProbes: installs the probes on the test process's OWN libc with the installer's
// real phases (probe/installer.h) through InProcessMemory instead of a stopped world: a
// code area mapped near libc.so.6, the shared area from a memfd "the target" created, the
// image built for the real libc functions, and jmp (or int3) patches journaled and written
// over libc's text. Which functions to probe is the test's choice (Probes finds its own);
// an int3 trap is redirected by a SIGTRAP handler here (by ptrace in profctl). The
// destructor restores every byte and unmaps the areas with the installer's removal steps.
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
#include "probe/installer.h"
#include "probe/probe_image.h"
#include "probe/shared_area.h"
#include "tests/probe/in_process_memory.h"

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

  SharedArea& area() { return installed_.area; }
  const ProbeImage& image() const { return image_; }
  uint64_t address(const std::string& name) const { return addresses_.at(name); }
  std::string libc_path() const { return libc_path_; }

 private:
  LibcProbes() = default;
  Result<MappedArea> map_code_area(Installer& installer, size_t size, bool far);

  InProcessMemory self_;
  Installation installed_;
  ProbeImage image_;
  std::map<std::string, uint64_t> addresses_;
  std::string libc_path_;
  bool patched_ = false;
};

}  // namespace profctl::probe::testing
