// SPDX-License-Identifier: MIT
// DebugCache: a debug file with compressed sections comes back as a copy with the same
// build-id, the same sections inflated and DWARF libdw reads as the uncompressed file's; a
// second ask reuses the copy; a cached file of another build-id (another file, or one put
// there) is never served; an uncompressed file and a disabled cache give no copy.
#include "unwind/debug_cache.h"

#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <fcntl.h>
#include <gelf.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>

namespace profctl {
namespace {

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/debug_cache_test.XXXXXX";
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

struct ElfFile {
  explicit ElfFile(int f) : fd(f) {
    elf_version(EV_CURRENT);
    elf = fd >= 0 ? elf_begin(fd, ELF_C_READ_MMAP, nullptr) : nullptr;
  }
  explicit ElfFile(const std::string& path) : ElfFile(open(path.c_str(), O_RDONLY | O_CLOEXEC)) {}
  ~ElfFile() {
    if (elf != nullptr) {
      elf_end(elf);
    }
    if (fd >= 0) {
      close(fd);
    }
  }
  std::string build_id() const {
    const void* bits = nullptr;
    const ssize_t n = elf != nullptr ? dwelf_elf_gnu_build_id(elf, &bits) : -1;
    std::string out;
    for (ssize_t i = 0; i < n; ++i) {
      char b[3];
      std::snprintf(b, sizeof b, "%02x", static_cast<const unsigned char*>(bits)[i]);
      out += b;
    }
    return out;
  }
  // Section name -> (size, compressed), of the sections with contents.
  std::map<std::string, std::pair<uint64_t, bool>> sections() const {
    std::map<std::string, std::pair<uint64_t, bool>> out;
    size_t shstrndx = 0;
    elf_getshdrstrndx(elf, &shstrndx);
    for (Elf_Scn* s = elf_nextscn(elf, nullptr); s != nullptr; s = elf_nextscn(elf, s)) {
      GElf_Shdr sh;
      gelf_getshdr(s, &sh);
      if (sh.sh_type == SHT_NOBITS) {
        continue;
      }
      bool compressed = (sh.sh_flags & SHF_COMPRESSED) != 0;
      uint64_t size = sh.sh_size;
      if (compressed) {
        GElf_Chdr ch;
        size = gelf_getchdr(s, &ch) != nullptr ? ch.ch_size : 0;
      }
      out[elf_strptr(elf, shstrndx, sh.sh_name)] = {size, compressed};
    }
    return out;
  }
  int fd;
  Elf* elf;
};

size_t count_cus(Elf* elf) {
  Dwarf* dw = dwarf_begin_elf(elf, DWARF_C_READ, nullptr);
  if (dw == nullptr) {
    return 0;
  }
  size_t n = 0;
  Dwarf_Off off = 0;
  Dwarf_Off next = 0;
  size_t hsize = 0;
  while (dwarf_nextcu(dw, off, &next, &hsize, nullptr, nullptr, nullptr) == 0) {
    ++n;
    off = next;
  }
  dwarf_end(dw);
  return n;
}

// symfix's debug sections kept in a file of their own: compressed (as Debian ships them) or not.
std::string keep_debug(const TempDir& d, const char* exe, const std::string& name, bool compress) {
  const std::string out = d.path() + "/" + name;
  const std::string cmd = std::string("objcopy --only-keep-debug ") +
                          (compress ? "--compress-debug-sections=zlib " : "") + exe + " " + out;
  return std::system(cmd.c_str()) == 0 ? out : std::string();
}

TEST(DebugCache, ACompressedDebugFileComesBackInflatedWithTheSameDwarf) {
  TempDir d;
  const std::string zfile = keep_debug(d, SYMFIX_PATH, "z.debug", true);
  const std::string plain = keep_debug(d, SYMFIX_PATH, "plain.debug", false);
  if (zfile.empty() || plain.empty()) {
    GTEST_SKIP() << "objcopy could not make the debug files";
  }
  ElfFile z(zfile);
  ElfFile p(plain);
  const std::string id = z.build_id();
  ASSERT_FALSE(id.empty());
  ASSERT_TRUE(z.sections().at(".debug_info").second) << "objcopy did not compress";
  DebugCache cache(d.path() + "/cache", DebugCache::kDefaultMaxBytes);
  ElfFile copy(cache.decompressed(z.fd, id));
  ASSERT_NE(copy.elf, nullptr);
  EXPECT_EQ(copy.build_id(), id);
  const auto want = p.sections();
  const auto got = copy.sections();
  for (const auto& [name, sz] : want) {
    ASSERT_TRUE(got.count(name)) << name;
    EXPECT_EQ(got.at(name).first, sz.first) << name;
    EXPECT_FALSE(got.at(name).second) << name << " still compressed";
  }
  EXPECT_GT(count_cus(p.elf), 0u);
  EXPECT_EQ(count_cus(copy.elf), count_cus(p.elf));

  // Asked again: the same file, not a new one.
  struct stat a {};
  struct stat b {};
  fstat(copy.fd, &a);
  ElfFile again(cache.decompressed(z.fd, id));
  ASSERT_GE(again.fd, 0);
  fstat(again.fd, &b);
  EXPECT_EQ(a.st_ino, b.st_ino);
}

TEST(DebugCache, ACachedFileOfAnotherBuildIdIsNeverServed) {
  TempDir d;
  const std::string zfile = keep_debug(d, SYMFIX_PATH, "z.debug", true);
  const std::string other = keep_debug(d, SYMFIX_FP_PATH, "other.debug", true);
  if (zfile.empty() || other.empty()) {
    GTEST_SKIP() << "objcopy could not make the debug files";
  }
  ElfFile z(zfile);
  ElfFile o(other);
  const std::string id = z.build_id();
  ASSERT_NE(id, o.build_id());
  DebugCache cache(d.path() + "/cache", DebugCache::kDefaultMaxBytes);
  // The other file's copy, put where `id`'s belongs (a file replaced at the same place, or
  // someone's plant): the right file's copy is made instead.
  {
    ElfFile oc(cache.decompressed(o.fd, o.build_id()));
    ASSERT_GE(oc.fd, 0);
  }
  std::filesystem::rename(d.path() + "/cache/" + o.build_id() + ".debug",
                          d.path() + "/cache/" + id + ".debug");
  ElfFile copy(cache.decompressed(z.fd, id));
  ASSERT_NE(copy.elf, nullptr);
  EXPECT_EQ(copy.build_id(), id);
  // And a build-id the file does not have: no copy at all.
  EXPECT_EQ(cache.decompressed(z.fd, "00112233445566778899aabbccddeeff00112233"), -1);
}

TEST(DebugCache, AnUncompressedFileOrADisabledCacheGivesNoCopy) {
  TempDir d;
  const std::string zfile = keep_debug(d, SYMFIX_PATH, "z.debug", true);
  const std::string plain = keep_debug(d, SYMFIX_PATH, "plain.debug", false);
  if (zfile.empty() || plain.empty()) {
    GTEST_SKIP() << "objcopy could not make the debug files";
  }
  ElfFile z(zfile);
  ElfFile p(plain);
  DebugCache cache(d.path() + "/cache", DebugCache::kDefaultMaxBytes);
  EXPECT_EQ(cache.decompressed(p.fd, p.build_id()), -1);
  EXPECT_EQ(DebugCache().decompressed(z.fd, z.build_id()), -1);
}

}  // namespace
}  // namespace profctl
