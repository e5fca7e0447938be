// SPDX-License-Identifier: MIT
#include "unwind/cfi_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

#include "base/cache_dir.h"
#include "base/fd.h"
#include "base/log.h"
#include "base/safe_file.h"

namespace profctl {
namespace {

constexpr char kMagic[8] = {'P', 'C', 'F', 'I', 'T', 'B', 'L', '\0'};
constexpr size_t kMaxBuildId = 128;  // hex digits: 64 bytes, beyond any real note
constexpr uint64_t kMaxRows = 16u << 20;

// The on-disk header; the rows follow, then an FNV-1a hash of everything before it.
struct Header {
  char magic[8];
  uint32_t version;
  uint32_t row_size;
  uint64_t base;
  uint64_t rows;
  uint32_t build_id_len;
  char build_id[kMaxBuildId];
  uint32_t reserved;
};
static_assert(sizeof(Header) == 168);

// FNV-1a over 8-byte words (then the tail bytes): a check against damage, not an
// adversary (a hostile writer can also write the sum); bytewise it was most of a load.
uint64_t fnv1a(const void* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  const auto* b = static_cast<const uint8_t*>(p);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w = 0;
    std::memcpy(&w, b + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
  }
  for (; i < n; ++i) {
    h = (h ^ b[i]) * 0x100000001b3ull;
  }
  return h;
}

}  // namespace

CfiCache CfiCache::from_environment() {
  std::string dir = cache_dir_from_environment("cfi");
  if (dir.empty()) {
    return {};
  }
  return CfiCache(std::move(dir), kDefaultMaxBytes);
}

std::string CfiCache::path_of(std::string_view build_id) const {
  return dir_ + "/" + std::string(build_id) + ".v" + std::to_string(kFormatVersion) + ".cfi";
}

std::optional<CfiTable> CfiCache::load(std::string_view build_id) const {
  if (!enabled() || !valid_build_id(build_id) || !cache_dir_is_private(dir_)) {
    return std::nullopt;
  }
  const std::string path = path_of(build_id);
  Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (!fd.valid() || fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) ||
      uint64_t(st.st_size) < sizeof(Header) + 8 ||
      uint64_t(st.st_size) > sizeof(Header) + 8 + kMaxRows * sizeof(CfiRow)) {
    return std::nullopt;
  }
  std::vector<char> buf(size_t(st.st_size));
  size_t got = 0;
  while (got < buf.size()) {
    ssize_t n = ::read(fd.get(), buf.data() + got, buf.size() - got);
    if (n <= 0) {
      return std::nullopt;
    }
    got += size_t(n);
  }
  Header h{};
  std::memcpy(&h, buf.data(), sizeof h);
  const size_t body = buf.size() - 8;
  uint64_t sum = 0;
  std::memcpy(&sum, buf.data() + body, 8);
  if (std::memcmp(h.magic, kMagic, sizeof kMagic) != 0 || h.version != kFormatVersion ||
      h.row_size != sizeof(CfiRow) || h.rows > kMaxRows ||
      sizeof(Header) + h.rows * sizeof(CfiRow) != body || h.build_id_len != build_id.size() ||
      std::string_view(h.build_id, build_id.size()) != build_id || sum != fnv1a(buf.data(), body)) {
    logger("unwind")->debug("CFI cache {}: not a valid table, ignored", path);
    return std::nullopt;
  }
  std::vector<CfiRow> rows(h.rows);
  std::memcpy(rows.data(), buf.data() + sizeof(Header), h.rows * sizeof(CfiRow));
  auto t = CfiTable::from_rows(h.base, std::move(rows));
  if (!t) {
    logger("unwind")->debug("CFI cache {}: {}", path, t.error().message());
    return std::nullopt;
  }
  // Touch it: eviction removes the least recently used files, by mtime.
  futimens(fd.get(), nullptr);
  return std::move(*t);
}

bool CfiCache::store(std::string_view build_id, const CfiTable& table) const {
  if (!enabled() || !valid_build_id(build_id) || table.rows().size() > kMaxRows) {
    return false;
  }
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (!ec) {
    ::chmod(dir_.c_str(), 0700);  // ours, made just now or before
  }
  if (!cache_dir_is_private(dir_)) {
    return false;
  }
  Header h{};
  std::memcpy(h.magic, kMagic, sizeof kMagic);
  h.version = kFormatVersion;
  h.row_size = sizeof(CfiRow);
  h.base = table.base();
  h.rows = table.rows().size();
  h.build_id_len = uint32_t(build_id.size());
  std::memcpy(h.build_id, build_id.data(), build_id.size());
  std::string data(sizeof h + h.rows * sizeof(CfiRow) + 8, '\0');
  std::memcpy(data.data(), &h, sizeof h);
  std::memcpy(data.data() + sizeof h, table.rows().data(), h.rows * sizeof(CfiRow));
  const uint64_t sum = fnv1a(data.data(), data.size() - 8);
  std::memcpy(data.data() + data.size() - 8, &sum, 8);
  auto dir = OutputDir::open(dir_, false);
  if (!dir) {
    return false;
  }
  std::string name = path_of(build_id).substr(dir_.size() + 1);
  if (auto w = dir->write_file(name, data); !w) {
    logger("unwind")->debug("CFI cache: {}", w.error().message());
    return false;
  }
  evict();
  return true;
}

void CfiCache::evict() const { evict_oldest(dir_, ".cfi", max_bytes_); }

Result<CfiTable> CfiCache::load_or_compile(std::string_view build_id, Elf* elf,
                                           bool* from_cache) const {
  if (from_cache != nullptr) {
    *from_cache = false;
  }
  if (!build_id.empty()) {
    if (auto t = load(build_id)) {
      if (from_cache != nullptr) {
        *from_cache = true;
      }
      return std::move(*t);
    }
  }
  auto t = CfiTable::compile(elf);
  if (t && !build_id.empty()) {
    store(build_id, *t);
  }
  return t;
}

}  // namespace profctl
