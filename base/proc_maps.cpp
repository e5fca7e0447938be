// SPDX-License-Identifier: MIT
#include "base/proc_maps.h"

#include <algorithm>

#include "base/fd.h"
#include "base/text_fields.h"

namespace profctl {

std::vector<MapEntry> parse_maps(std::string_view text) {
  std::vector<MapEntry> out;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    std::string_view rest = line;
    std::string_view range = next_token(rest);
    std::string_view perms = next_token(rest);
    std::string_view offset = next_token(rest);
    next_token(rest);  // dev
    next_token(rest);  // inode
    size_t dash = range.find('-');
    MapEntry m;
    if (dash == std::string_view::npos || perms.size() < 4 ||
        !parse_num(range.substr(0, dash), m.start, 16) ||
        !parse_num(range.substr(dash + 1), m.end, 16) || !parse_num(offset, m.offset, 16) ||
        m.end < m.start) {
      continue;
    }
    m.readable = perms[0] == 'r';
    m.executable = perms[2] == 'x';
    m.writable = perms[1] == 'w';
    m.shared = perms[3] == 's';
    size_t b = rest.find_first_not_of(' ');
    if (b != std::string_view::npos) {
      m.path = std::string(rest.substr(b));
    }
    out.push_back(std::move(m));
  }
  return out;
}

const MapEntry* find_mapping(const std::vector<MapEntry>& maps, uint64_t addr) {
  auto it = std::upper_bound(maps.begin(), maps.end(), addr,
                             [](uint64_t a, const MapEntry& m) { return a < m.start; });
  if (it == maps.begin()) {
    return nullptr;
  }
  --it;
  return addr < it->end ? &*it : nullptr;
}

std::optional<uint64_t> parse_statm_size(std::string_view text) {
  std::string_view tok = next_token(text);
  uint64_t pages = 0;
  if (tok.empty() || !parse_num(tok, pages)) {
    return std::nullopt;
  }
  return pages;
}

std::optional<uint64_t> read_mapped_pages(pid_t pid) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/statm");
  return text ? parse_statm_size(*text) : std::nullopt;
}

}  // namespace profctl
