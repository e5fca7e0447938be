// SPDX-License-Identifier: MIT
#include "unwind/own_vdso.h"

#include <fcntl.h>
#include <sys/auxv.h>
#include <unistd.h>

#include <cstring>
#include <vector>

#include "base/fd.h"
#include "base/proc_maps.h"

namespace profctl {

std::span<const char> own_vdso_image() {
  static const std::vector<char> image = [] {
    std::vector<char> out;
    const uint64_t base = getauxval(AT_SYSINFO_EHDR);
    auto maps = read_file("/proc/self/maps");
    if (base == 0 || !maps) {
      return out;
    }
    for (const MapEntry& m : parse_maps(*maps)) {
      if (m.start == base && m.path == "[vdso]" && m.end > m.start && m.readable) {
        const auto* p = reinterpret_cast<const char*>(base);
        out.assign(p, p + (m.end - m.start));
        break;
      }
    }
    return out;
  }();
  return {image.data(), image.size()};
}

bool shares_own_vdso(const std::string& exe_path, uint64_t vdso_bytes) {
  if (vdso_bytes == 0 || vdso_bytes != own_vdso_image().size()) {
    return false;
  }
  auto fd = Fd::open(exe_path, O_RDONLY);
  if (!fd) {
    return false;
  }
  // The executable is the target's file: only its header is read, and checked.
  ElfW(Ehdr) theirs{};
  if (pread(fd->get(), &theirs, sizeof theirs, 0) != static_cast<ssize_t>(sizeof theirs)) {
    return false;
  }
  const auto* ours = reinterpret_cast<const ElfW(Ehdr)*>(own_vdso_image().data());
  return std::memcmp(theirs.e_ident, ELFMAG, SELFMAG) == 0 &&
         theirs.e_ident[EI_CLASS] == ours->e_ident[EI_CLASS] &&
         theirs.e_ident[EI_DATA] == ours->e_ident[EI_DATA] && theirs.e_machine == ours->e_machine;
}

}  // namespace profctl
