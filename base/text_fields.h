// SPDX-License-Identifier: MIT
// Tokens and numbers of the /proc files profctl parses: every byte read from the target is
// untrusted, so a field that does not parse is reported (false), never guessed.
#pragma once

#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <string>
#include <string_view>
#include <system_error>

namespace profctl {

// The next whitespace-separated token of `s` (consumed); empty at the end.
inline std::string_view next_token(std::string_view& s) {
  size_t b = s.find_first_not_of(" \t\n");
  if (b == std::string_view::npos) {
    s = {};
    return {};
  }
  size_t e = s.find_first_of(" \t\n", b);
  std::string_view tok = s.substr(b, e == std::string_view::npos ? std::string_view::npos : e - b);
  s = e == std::string_view::npos ? std::string_view{} : s.substr(e);
  return tok;
}

// The whole of `s` as a number in `base` (16 accepts a 0x prefix).
template <class T>
bool parse_num(std::string_view s, T& out, int base = 10) {
  if (s.empty()) {
    return false;
  }
  if (base == 16 && s.size() > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
    s.remove_prefix(2);
  }
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out, base);
  return ec == std::errc() && p == s.data() + s.size();
}

// A target address or value as messages show it: "0x7f3a2c001234".
inline std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%" PRIx64, v);
  return buf;
}

}  // namespace profctl
