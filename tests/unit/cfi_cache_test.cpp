// SPDX-License-Identifier: MIT
// CfiCache: tables survive a round trip; anything not exactly what we wrote (another
// build-id, a flipped byte, rows out of order under a good checksum, a truncated file, a
// symlink, a directory others can write) is not loaded; racing writers and readers never
// see half a file; the directory stays under its bound; PROFCTL_NO_CACHE turns it off.
#include "unwind/cfi_cache.h"

#include <fcntl.h>
#include <gelf.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

namespace profctl {
namespace {

constexpr char kId[] = "00112233445566778899aabbccddeeff00112233";

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/cfi_cache_test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

CfiTable libc_table() {
  elf_version(EV_CURRENT);
  int fd = open("/lib/x86_64-linux-gnu/libc.so.6", O_RDONLY | O_CLOEXEC);
  Elf* elf = elf_begin(fd, ELF_C_READ_MMAP, nullptr);
  auto t = CfiTable::compile(elf);
  elf_end(elf);
  close(fd);
  return t.ok() ? std::move(*t) : CfiTable();
}

std::string read_all(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}
void write_all(const std::string& p, const std::string& data) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << data;
}
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

TEST(CfiCache, RoundTrip) {
  TempDir d;
  CfiCache cache(d.path() + "/cfi", CfiCache::kDefaultMaxBytes);
  CfiTable t = libc_table();
  ASSERT_FALSE(t.empty());
  EXPECT_FALSE(cache.load(kId).has_value());
  ASSERT_TRUE(cache.store(kId, t));
  auto back = cache.load(kId);
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->base(), t.base());
  ASSERT_EQ(back->rows().size(), t.rows().size());
  EXPECT_EQ(std::memcmp(back->rows().data(), t.rows().data(), t.rows().size_bytes()), 0);
  const uint64_t pc = t.base() + t.rows()[t.rows().size() / 2].pc;
  EXPECT_EQ(back->find(pc) - back->rows().data(), t.find(pc) - t.rows().data());
  // Another build-id, or one that is not hex (a path), finds nothing.
  EXPECT_FALSE(cache.load("00112233445566778899aabbccddeeff00112234").has_value());
  EXPECT_FALSE(cache.load("../../etc/passwd").has_value());
  EXPECT_FALSE(cache.store("../x", t));
  struct stat st {};
  ASSERT_EQ(stat((d.path() + "/cfi").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
}

TEST(CfiCache, DamagedFilesAreNotLoaded) {
  TempDir d;
  CfiCache cache(d.path() + "/cfi", CfiCache::kDefaultMaxBytes);
  CfiTable t = libc_table();
  ASSERT_TRUE(cache.store(kId, t));
  const std::string file = d.path() + "/cfi/" + kId + ".v1.cfi";
  const std::string good = read_all(file);
  ASSERT_GT(good.size(), 1000u);
  constexpr size_t kHeader = 168;
  // A flipped byte in a row: the checksum.
  std::string bad = good;
  bad[kHeader + 100] ^= 1;
  write_all(file, bad);
  EXPECT_FALSE(cache.load(kId).has_value());
  // Two rows swapped, checksum recomputed: the rows' order.
  bad = good;
  std::swap_ranges(bad.begin() + kHeader, bad.begin() + kHeader + 16, bad.begin() + kHeader + 16);
  uint64_t sum = fnv1a(bad.data(), bad.size() - 8);
  std::memcpy(bad.data() + bad.size() - 8, &sum, 8);
  write_all(file, bad);
  EXPECT_FALSE(cache.load(kId).has_value());
  // An unknown rule, checksum recomputed.
  bad = good;
  bad[kHeader + 12] = 9;  // the first row's cfa
  sum = fnv1a(bad.data(), bad.size() - 8);
  std::memcpy(bad.data() + bad.size() - 8, &sum, 8);
  write_all(file, bad);
  EXPECT_FALSE(cache.load(kId).has_value());
  // Truncated; empty; another format version in the header.
  write_all(file, good.substr(0, good.size() - 9));
  EXPECT_FALSE(cache.load(kId).has_value());
  write_all(file, "");
  EXPECT_FALSE(cache.load(kId).has_value());
  bad = good;
  bad[8] = 2;
  write_all(file, bad);
  EXPECT_FALSE(cache.load(kId).has_value());
  // The good bytes again: loaded (so each case above failed for its own reason).
  write_all(file, good);
  EXPECT_TRUE(cache.load(kId).has_value());
  // A symlink at the name is not followed.
  const std::string elsewhere = d.path() + "/elsewhere";
  write_all(elsewhere, good);
  std::filesystem::remove(file);
  std::filesystem::create_symlink(elsewhere, file);
  EXPECT_FALSE(cache.load(kId).has_value());
}

TEST(CfiCache, ADirectoryOthersCanWriteIsNotUsed) {
  TempDir d;
  CfiCache cache(d.path() + "/cfi", CfiCache::kDefaultMaxBytes);
  CfiTable t = libc_table();
  ASSERT_TRUE(cache.store(kId, t));
  ASSERT_EQ(chmod((d.path() + "/cfi").c_str(), 0777), 0);
  EXPECT_FALSE(cache.load(kId).has_value());
  chmod((d.path() + "/cfi").c_str(), 0700);
  EXPECT_TRUE(cache.load(kId).has_value());
}

// Two writers and a reader on the same build-id: every load is the whole table or nothing.
TEST(CfiCache, RacingRunsSeeWholeFiles) {
  TempDir d;
  CfiCache cache(d.path() + "/cfi", CfiCache::kDefaultMaxBytes);
  const CfiTable t = libc_table();
  std::atomic<bool> stop{false};
  std::atomic<int> loaded{0};
  std::atomic<int> wrong{0};
  std::thread reader([&] {
    while (!stop) {
      if (auto back = cache.load(kId)) {
        ++loaded;
        wrong += back->rows().size() != t.rows().size() ? 1 : 0;
      }
    }
  });
  auto writer = [&] {
    for (int i = 0; i < 40; ++i) {
      cache.store(kId, t);
    }
  };
  std::thread w1(writer);
  std::thread w2(writer);
  w1.join();
  w2.join();
  stop = true;
  reader.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_TRUE(cache.load(kId).has_value());
  // No temporary is left behind.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(d.path() + "/cfi")) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u);
}

TEST(CfiCache, StaysUnderItsSizeBound) {
  TempDir d;
  const CfiTable t = libc_table();
  const uint64_t one = t.rows().size_bytes() + 200;
  CfiCache cache(d.path() + "/cfi", one * 3);
  for (int i = 0; i < 6; ++i) {
    std::string id = std::string(kId).substr(0, 38) + char('a' + i) + "0";
    ASSERT_TRUE(cache.store(id, t));
  }
  uint64_t total = 0;
  for (const auto& e : std::filesystem::directory_iterator(d.path() + "/cfi")) {
    total += e.file_size();
  }
  EXPECT_LE(total, one * 3);
  // The newest is kept.
  EXPECT_TRUE(cache.load(std::string(kId).substr(0, 38) + "f0").has_value());
}

TEST(CfiCache, Environment) {
  const char* old_xdg = getenv("XDG_CACHE_HOME");
  std::string saved = old_xdg != nullptr ? old_xdg : "";
  setenv("XDG_CACHE_HOME", "/nonexistent-xdg", 1);
  unsetenv("PROFCTL_NO_CACHE");
  EXPECT_EQ(CfiCache::from_environment().dir(), "/nonexistent-xdg/profctl/cfi");
  setenv("PROFCTL_NO_CACHE", "1", 1);
  EXPECT_FALSE(CfiCache::from_environment().enabled());
  setenv("PROFCTL_NO_CACHE", "0", 1);
  EXPECT_TRUE(CfiCache::from_environment().enabled());
  unsetenv("PROFCTL_NO_CACHE");
  if (old_xdg != nullptr) {
    setenv("XDG_CACHE_HOME", saved.c_str(), 1);
  } else {
    unsetenv("XDG_CACHE_HOME");
  }
}

}  // namespace
}  // namespace profctl
