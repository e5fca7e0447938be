// SPDX-License-Identifier: MIT
#include "base/syscall_names.h"

namespace profctl {
namespace {

struct Entry {
  long nr;
  std::string_view name;
};

constexpr Entry kTable[] = {
#include "base/syscall_table.inc"
    {-1, ""},  // keeps the array non-empty when the header was missing
};

}  // namespace

std::optional<std::string_view> x86_64_syscall_name(long nr) {
  // ~360 entries in number order: a linear scan costs nothing next to reading /proc.
  for (const Entry& e : kTable) {
    if (e.nr == nr && !e.name.empty()) {
      return e.name;
    }
  }
  return std::nullopt;
}

}  // namespace profctl
