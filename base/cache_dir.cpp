// SPDX-License-Identifier: MIT
#include "base/cache_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <vector>

namespace profctl {

std::string cache_dir_from_environment(std::string_view sub) {
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
  return root + "/profctl/" + std::string(sub);
}

bool cache_dir_is_private(const std::string& dir) {
  struct stat st {};
  return lstat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) && st.st_uid == geteuid() &&
         (st.st_mode & 022) == 0;
}

bool valid_build_id(std::string_view id) {
  return id.size() >= 2 && id.size() <= 128 &&
         id.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

void evict_oldest(const std::string& dir, std::string_view suffix, uint64_t max_bytes) {
  struct Entry {
    std::filesystem::path path;
    uint64_t size;
    std::filesystem::file_time_type mtime;
  };
  std::vector<Entry> entries;
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    std::error_code e2;
    if (!e.is_regular_file(e2) || !e.path().filename().string().ends_with(suffix)) {
      continue;
    }
    Entry en{e.path(), e.file_size(e2), e.last_write_time(e2)};
    if (!e2) {
      total += en.size;
      entries.push_back(std::move(en));
    }
  }
  if (total <= max_bytes) {
    return;
  }
  std::sort(entries.begin(), entries.end(),
            [](const Entry& a, const Entry& b) { return a.mtime < b.mtime; });
  for (const Entry& e : entries) {
    if (total <= max_bytes / 4 * 3) {
      break;
    }
    std::filesystem::remove(e.path, ec);
    total -= e.size;
  }
}

}  // namespace profctl
