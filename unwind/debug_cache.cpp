// SPDX-License-Identifier: MIT
#include "unwind/debug_cache.h"

#include <elfutils/libdwelf.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <thread>
#include <vector>

#include "base/cache_dir.h"
#include "base/fd.h"
#include "base/log.h"

namespace profctl {
namespace {

struct ElfDeleter {
  void operator()(Elf* e) const { elf_end(e); }
};
using ElfPtr = std::unique_ptr<Elf, ElfDeleter>;

std::string hex(const void* bits, size_t len) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  const auto* b = static_cast<const unsigned char*>(bits);
  for (size_t i = 0; i < len; ++i) {
    out += kHex[b[i] >> 4];
    out += kHex[b[i] & 0xf];
  }
  return out;
}

bool has_compressed_section(Elf* elf) {
  for (Elf_Scn* scn = elf_nextscn(elf, nullptr); scn != nullptr; scn = elf_nextscn(elf, scn)) {
    GElf_Shdr sh;
    if (gelf_getshdr(scn, &sh) != nullptr && (sh.sh_flags & SHF_COMPRESSED) != 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

DebugCache DebugCache::from_environment() {
  std::string dir = cache_dir_from_environment("debug");
  if (dir.empty()) {
    return {};
  }
  return DebugCache(std::move(dir), kDefaultMaxBytes);
}

std::string DebugCache::path_of(std::string_view build_id) const {
  return dir_ + "/" + std::string(build_id) + ".debug";
}

int DebugCache::open_checked(const std::string& path, std::string_view build_id) const {
  Fd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (!fd.valid() || fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != geteuid()) {
    return -1;
  }
  ElfPtr elf(elf_begin(fd.get(), ELF_C_READ_MMAP, nullptr));
  const void* bits = nullptr;
  const ssize_t n = elf ? dwelf_elf_gnu_build_id(elf.get(), &bits) : -1;
  if (n <= 0 || hex(bits, static_cast<size_t>(n)) != build_id ||
      has_compressed_section(elf.get())) {
    return -1;
  }
  // Touch it: eviction removes the least recently used files, by mtime.
  (void)futimens(fd.get(), nullptr);
  return fd.release();
}

// The copy: the same ELF header, program headers and sections in the same order (so every
// sh_link and sh_info stays right), each compressed section's data inflated; libelf lays
// the file out.
bool DebugCache::write_copy(int fd, std::string_view build_id, const std::string& path) const {
  ElfPtr in(elf_begin(fd, ELF_C_READ_MMAP, nullptr));
  GElf_Ehdr eh;
  size_t phnum = 0;
  if (!in || elf_kind(in.get()) != ELF_K_ELF || gelf_getehdr(in.get(), &eh) == nullptr ||
      eh.e_shstrndx >= SHN_LORESERVE || elf_getphdrnum(in.get(), &phnum) != 0 ||
      !has_compressed_section(in.get())) {
    return false;
  }
  const void* bits = nullptr;
  const ssize_t n = dwelf_elf_gnu_build_id(in.get(), &bits);
  if (n <= 0 || hex(bits, static_cast<size_t>(n)) != build_id) {
    return false;  // not the file it was asked for: nothing is cached under another's name
  }
  char tid[32];
  std::snprintf(tid, sizeof tid, ".%d.%zx.tmp", getpid(),
                std::hash<std::thread::id>{}(std::this_thread::get_id()));
  const std::string tmp = path + tid;
  Fd out_fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out_fd.valid()) {
    return false;
  }
  bool ok = false;
  {
    ElfPtr out(elf_begin(out_fd.get(), ELF_C_WRITE, nullptr));
    ok = out && gelf_newehdr(out.get(), gelf_getclass(in.get())) != nullptr &&
         (phnum == 0 || gelf_newphdr(out.get(), phnum) != nullptr);
    for (size_t i = 0; ok && i < phnum; ++i) {
      GElf_Phdr ph;
      ok = gelf_getphdr(in.get(), static_cast<int>(i), &ph) != nullptr &&
           gelf_update_phdr(out.get(), static_cast<int>(i), &ph) != 0;
    }
    for (Elf_Scn* scn = elf_nextscn(in.get(), nullptr); ok && scn != nullptr;
         scn = elf_nextscn(in.get(), scn)) {
      GElf_Shdr sh;
      ok = gelf_getshdr(scn, &sh) != nullptr;
      if (ok && (sh.sh_flags & SHF_COMPRESSED) != 0) {
        ok = elf_compress(scn, 0, 0) >= 0 && gelf_getshdr(scn, &sh) != nullptr;
      }
      Elf_Scn* o = ok ? elf_newscn(out.get()) : nullptr;
      ok = o != nullptr;
      if (ok && sh.sh_type != SHT_NOBITS) {
        Elf_Data* d = elf_getdata(scn, nullptr);
        Elf_Data* od = d != nullptr ? elf_newdata(o) : nullptr;
        if (od != nullptr) {
          // Points into `in`, which outlives the write below.
          od->d_buf = d->d_buf;
          od->d_type = d->d_type;
          od->d_size = d->d_size;
          od->d_off = 0;
          od->d_align = d->d_align;
          od->d_version = d->d_version;
        }
        ok = d == nullptr || od != nullptr;
      }
      ok = ok && gelf_update_shdr(o, &sh) != 0;
    }
    ok = ok && gelf_update_ehdr(out.get(), &eh) != 0 && elf_update(out.get(), ELF_C_WRITE) > 0;
  }
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    logger("unwind")->debug("decompressed copy of a debug file: {}", elf_errmsg(-1));
    ::unlink(tmp.c_str());
    return false;
  }
  return true;
}

int DebugCache::decompressed(int fd, std::string_view build_id) const {
  if (!enabled() || fd < 0 || !valid_build_id(build_id)) {
    return -1;
  }
  const std::string path = path_of(build_id);
  if (cache_dir_is_private(dir_)) {
    if (int c = open_checked(path, build_id); c >= 0) {
      return c;
    }
  } else {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    ::chmod(dir_.c_str(), 0700);
    if (!cache_dir_is_private(dir_)) {
      return -1;
    }
  }
  if (!write_copy(fd, build_id, path)) {
    return -1;
  }
  evict();
  return open_checked(path, build_id);
}

void DebugCache::evict() const { evict_oldest(dir_, ".debug", max_bytes_); }

}  // namespace profctl
