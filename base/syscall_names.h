// SPDX-License-Identifier: MIT
// x86-64 syscall numbers to names, from the kernel's <asm/unistd_64.h> (generated at build
// time by base/syscall_table.cmake).
#pragma once

#include <optional>
#include <string_view>

namespace profctl {

// "openat" for 257; nullopt for a number the header does not define.
std::optional<std::string_view> x86_64_syscall_name(long nr);

}  // namespace profctl
