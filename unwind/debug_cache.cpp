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

#include "base/fd.h"
#include "base/log.h"

namespace profctl {
namespace {

struct ElfDeleter {
  void operator()(Elf* e) const { elf_end(e); }
};
using ElfPtr = std::unique_ptr<Elf, ElfDeleter>;

bool valid_build_id(std::string_view id) {
  return id.size() >= 2 && id.size() <= 128 &&
         id.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

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

// As CfiCache's: only a directory of ours that no one else can write.
bool dir_is_private(const std::string& dir) {
  struct stat st {};
  return lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
         (st.st_mode & 022) == 0;
}

}  // namespace

DebugCache DebugCache::from_environment() {
  if (const char* off = std::getenv("PROFCTL_NO_CACHE");
      off != nullptr && *off != '\0' && std::strcmp(off, "0") != 0) {
    return {};
  }
  std::string root;
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && x[0] == '/') {
    root = x;
  } else if (const char* h = std::getenv("HOME"); h != nullptr && h[0] == '/') {
    root = std::string(h) + "/.cache";
  } else {
    return {};
  }
  return DebugCache(root + "/profctl/debug", kDefaultMaxBytes);
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
  if (dir_is_private(dir_)) {
    if (int c = open_checked(path, build_id); c >= 0) {
      return c;
    }
  } else {
    std::error_code ec;
    std::filesystem::create_directories(dir_, ec);
    ::chmod(dir_.c_str(), 0700);
    if (!dir_is_private(dir_)) {
      return -1;
    }
  }
  if (!write_copy(fd, build_id, path)) {
    return -1;
  }
  evict();
  return open_checked(path, build_id);
}

// Keeps the directory under max_bytes_: the least recently used copies go first, down to
// three quarters of the bound so that eviction does not run at every store.
void DebugCache::evict() const {
  struct Entry {
    std::filesystem::path path;
    uint64_t size;
    std::filesystem::file_time_type mtime;
  };
  std::vector<Entry> entries;
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::error_code e2;
    if (!e.is_regular_file(e2) || e.path().extension() != ".debug") {
      continue;
    }
    Entry en{e.path(), e.file_size(e2), e.last_write_time(e2)};
    if (!e2) {
      total += en.size;
      entries.push_back(std::move(en));
    }
  }
  if (total <= max_bytes_) {
    return;
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.mtime < b.mtime; });
  for (const Entry& e : entries) {
    if (total <= max_bytes_ / 4 * 3) {
      break;
    }
    std::filesystem::remove(e.path, ec);
    total -= e.size;
  }
}

}  // namespace profctl
