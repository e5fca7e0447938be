// SPDX-License-Identifier: MIT
// CfiCache: compiled CFI tables on disk, one file per build-id, so that a second run on the
// same binaries loads them instead of parsing DWARF.
//
// Where: $XDG_CACHE_HOME/profctl/cfi, else ~/.cache/profctl/cfi; PROFCTL_NO_CACHE=1 turns
// it off. A file is "<build-id>.v<N>.cfi": a header (magic, format version, row size,
// base, row count, build-id), the rows, and a checksum. It is written to a temporary file
// in the same directory and renamed into place, so a reader sees a whole file or none, and
// two runs that race both write the same bytes. The directory is kept under a size bound by
// removing the least recently used files. A file read back is untrusted (anyone able to
// write the directory chose it): size, magic, version, checksum and build-id are checked,
// then CfiTable::from_rows checks the rows; anything wrong means "not cached".
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "unwind/cfi_table.h"

namespace profctl {

class CfiCache {
 public:
  static constexpr uint32_t kFormatVersion = 1;
  static constexpr uint64_t kDefaultMaxBytes = 256ull << 20;

  // Disabled: load() finds nothing and store() writes nothing.
  CfiCache() = default;
  CfiCache(std::string dir, uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {}
  // The user's cache directory, or disabled when PROFCTL_NO_CACHE is set to a non-empty
  // value other than "0", or no directory can be named.
  static CfiCache from_environment();

  bool enabled() const { return !dir_.empty(); }
  const std::string& dir() const { return dir_; }

  // The table cached for `build_id` (hex), if a valid one is there.
  std::optional<CfiTable> load(std::string_view build_id) const;
  // Best effort: a failure (read-only home, full disk) only means no cache next time.
  bool store(std::string_view build_id, const CfiTable& table) const;

  // Loaded from the cache, or compiled from `elf` and stored. No build-id: compiled only.
  Result<CfiTable> load_or_compile(std::string_view build_id, Elf* elf,
                                   bool* from_cache = nullptr) const;

 private:
  std::string path_of(std::string_view build_id) const;
  void evict() const;

  std::string dir_;
  uint64_t max_bytes_ = kDefaultMaxBytes;
};

}  // namespace profctl
