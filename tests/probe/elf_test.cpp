// SPDX-License-Identifier: MIT
// Probe sites from a module file: libc's real symbols, and malformed files refused.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "attach/proc.h"
#include "base/fd.h"
#include "probe/elf_symbols.h"

namespace profctl::probe {
namespace {

std::string libc_path(std::vector<MapEntry>& maps) {
  maps = parse_maps(read_file("/proc/self/maps").value());
  for (const MapEntry& m : maps) {
    if (m.path.ends_with("/libc.so.6")) {
      return m.path;
    }
  }
  return "";
}

TEST(ProbeElfSymbols, FindsLibcAllocationFunctionsAndTheBias) {
  std::vector<MapEntry> maps;
  std::string libc = libc_path(maps);
  ASSERT_FALSE(libc.empty());
  std::vector<std::string> names = {"malloc", "free", "calloc", "no_such_function_xyz"};
  auto elf = read_elf_functions(libc, names);
  ASSERT_TRUE(elf) << elf.error().message();
  EXPECT_TRUE(elf->pie_or_shared);
  ASSERT_TRUE(elf->functions.contains("malloc"));
  EXPECT_FALSE(elf->functions.contains("no_such_function_xyz"));
  EXPECT_GT(elf->functions.at("malloc").size, 16u);
  EXPECT_FALSE(elf->functions.at("malloc").ifunc);
  auto bias = load_bias(*elf, maps, libc);
  ASSERT_TRUE(bias) << bias.error().message();
  for (const char* name : {"malloc", "free", "calloc"}) {
    EXPECT_EQ(*bias + elf->functions.at(name).value,
              reinterpret_cast<uint64_t>(dlsym(RTLD_DEFAULT, name)))
        << name;
  }
  EXPECT_FALSE(load_bias(*elf, maps, "/not/mapped.so"));
}

TEST(ProbeElfSymbols, MalformedFilesAreErrors) {
  std::vector<std::string> names = {"malloc"};
  EXPECT_FALSE(read_elf_functions("/nonexistent/file", names));
  char path[] = "/tmp/probe_elf_XXXXXX";
  int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(write(fd, "not an elf file at all", 22), 22);
  close(fd);
  EXPECT_FALSE(read_elf_functions(path, names));
  // A truncated real ELF: header claims sections beyond the end of the file.
  std::vector<MapEntry> maps;
  auto libc_bytes = read_file(libc_path(maps));
  ASSERT_TRUE(libc_bytes);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(libc_bytes->data(), 4096);
  }
  auto r = read_elf_functions(path, names);
  EXPECT_TRUE(!r || r->functions.empty());
  unlink(path);
}

}  // namespace
}  // namespace profctl::probe
