// SPDX-License-Identifier: MIT
// DebugCache: separate debug files whose sections are compressed (Debian's -dbg packages,
// `objcopy --compress-debug-sections`), kept decompressed on disk, one file per build-id.
//
// Why: libdw inflates every compressed .debug_* section when it opens a file's DWARF, and it
// does so again for every libdwfl session that opens it: each followed process image that
// libdwfl unwinds or symbolizes in ld.so or libc paid ~4 ms of CPU to inflate the same
// libc6-dbg files (bench/TREE.md). A decompressed copy is mapped instead: inflated once per
// file, shared by every image, every session and every later run.
//
// Where: $XDG_CACHE_HOME/profctl/debug, else ~/.cache/profctl/debug, a private directory
// (PROFCTL_NO_CACHE=1: off, as CfiCache). A copy is written to a temporary file and renamed
// into place, kept under a size bound by removing the least recently used files, and read
// back as untrusted: used only if it is a regular file of ours whose build-id is the one
// asked for (else the original file is used).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace profctl {

class DebugCache {
 public:
  static constexpr uint64_t kDefaultMaxBytes = 1ull << 30;

  DebugCache() = default;  // disabled
  DebugCache(std::string dir, uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {}
  static DebugCache from_environment();

  bool enabled() const { return !dir_.empty(); }

  // An fd of the decompressed copy of debug file `fd` (build-id `build_id`, hex), written
  // now if the cache has none; -1 when `fd` has no compressed section, or no copy can be
  // had (the caller keeps `fd`). `fd` is not closed.
  int decompressed(int fd, std::string_view build_id) const;

 private:
  std::string path_of(std::string_view build_id) const;
  int open_checked(const std::string& path, std::string_view build_id) const;
  bool write_copy(int fd, std::string_view build_id, const std::string& path) const;
  void evict() const;

  std::string dir_;
  uint64_t max_bytes_ = kDefaultMaxBytes;
};

}  // namespace profctl
