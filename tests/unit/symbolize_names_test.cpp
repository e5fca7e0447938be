// SPDX-License-Identifier: MIT
// Names for frames that have no symbol of their own or several: PLT entries (named from the
// relocations, checked against objdump's <name@plt> labels), functions of a stripped file
// (named by their CFI start, checked against the unstripped file's symbol), and glibc's
// aliases (the public name wins over __GI_* and __libc_*). Syscall names by number.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <regex>
#include <string>
#include <vector>

#include "attach/proc.h"
#include "symbolize/symbolizer.h"
#include "tests/unit/symfix_util.h"
#include "unwind/target_dwfl.h"

namespace profctl {
namespace {

std::unique_ptr<TargetDwfl> open_files(const std::string& path) {
  auto t = TargetDwfl::for_files({path});
  EXPECT_TRUE(t.ok()) << (t.ok() ? "" : t.error().message());
  return t.ok() ? std::move(t).value() : nullptr;
}

struct PltLabel {
  uint64_t addr;
  std::string name;  // without "@plt"
};

// objdump -d's "0000000000001090 <clock_gettime@plt>:" labels.
std::vector<PltLabel> objdump_plt(const std::string& path) {
  std::vector<PltLabel> out;
  const std::string cmd = std::string(OBJDUMP_PATH) + " -d --no-show-raw-insn '" + path + "'";
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) {
    return out;
  }
  static const std::regex kLabel(R"(^([0-9a-f]+) <(.+)@plt>:$)");
  std::array<char, 4096> buf;
  while (fgets(buf.data(), buf.size(), p) != nullptr) {
    std::string line(buf.data());
    while (!line.empty() && line.back() == '\n') {
      line.pop_back();
    }
    std::smatch m;
    if (std::regex_match(line, m, kLabel)) {
      out.push_back({std::stoull(m[1], nullptr, 16), m[2]});
    }
  }
  pclose(p);
  return out;
}

void expect_plt_names(const std::string& path, size_t at_least) {
  SCOPED_TRACE(path);
  const auto labels = objdump_plt(path);
  ASSERT_GE(labels.size(), at_least) << "objdump found too few PLT entries in " << path;
  auto t = open_files(path);
  ASSERT_TRUE(t);
  const uint64_t bias = testing::module_bias(t->get(), testing::basename_of(path));
  Symbolizer s(*t, {});
  for (const PltLabel& l : labels) {
    for (uint64_t at : {l.addr, l.addr + 4, l.addr + 15}) {
      const auto& frames = s.symbolize(bias + at, /*activation=*/true);
      ASSERT_EQ(frames.size(), 1u);
      EXPECT_EQ(frames[0].function, l.name + "@plt") << "at 0x" << std::hex << at;
      EXPECT_EQ(frames[0].function_start, l.addr) << "at 0x" << std::hex << at;
    }
  }
}

TEST(SymbolizeNames, PltEntriesAreNamedByTheRelocationTheyJumpThrough) {
  // lld's .plt, and GNU ld's IBT layout (.plt.sec, .plt.got): every entry objdump labels.
  expect_plt_names(PLT_TARGET_PATH, 5);
  expect_plt_names(PLT_TARGET_IBT_PATH, 5);
}

TEST(SymbolizeNames, AStrippedFunctionIsNamedByItsCfiStartAtEveryPc) {
  auto full = open_files(SYMFIX_PATH);
  auto stripped = open_files(SYMFIX_STRIPPED_PATH);
  ASSERT_TRUE(full && stripped);
  auto sym = testing::find_symbol(full->get(), "symfix", "_ZN2ns5Klass6methodEi");
  ASSERT_TRUE(sym);
  const uint64_t bias = testing::module_bias(stripped->get(), "symfix_stripped");
  Symbolizer s(*stripped, {});
  for (uint64_t off = 0; off < sym->size; ++off) {
    const auto& frames = s.symbolize(bias + sym->elf_addr + off, /*activation=*/true);
    ASSERT_EQ(frames.size(), 1u);
    EXPECT_FALSE(frames[0].function);
    EXPECT_EQ(frames[0].function_start, sym->elf_addr) << "at +" << off;
  }
  // A named function's start is its symbol's.
  Symbolizer named(*full, {});
  EXPECT_EQ(named.symbolize(sym->addr + 3, true).back().function_start, sym->elf_addr);
}

TEST(SymbolizeNames, GlibcFunctionsGetTheirPublicName) {
  // libc6-dbg (a dependency) gives libc's full symbol table with every alias.
  const std::string libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
  auto t = open_files(libc);
  ASSERT_TRUE(t);
  Symbolizer s(*t, {});
  const std::pair<const char*, const char*> cases[] = {
      {"__GI___clock_nanosleep", "clock_nanosleep"},
      {"__libc_read", "read"},
      {"__GI___wait4", "wait4"},
      {"__libc_malloc", "malloc"},
  };
  for (const auto& [internal, public_name] : cases) {
    auto sym = testing::find_symbol(t->get(), "libc", internal);
    ASSERT_TRUE(sym) << internal << ": is libc6-dbg installed?";
    const auto& frames = s.symbolize(sym->addr + 1, /*activation=*/true);
    EXPECT_EQ(frames.back().function, public_name) << internal;
    EXPECT_EQ(frames.back().function_start, sym->elf_addr) << internal;
  }
}

TEST(SymbolizeNames, SyscallNamesComeFromTheKernelHeader) {
  EXPECT_EQ(syscall_name(257), "openat");
  EXPECT_EQ(syscall_name(0), "read");
  EXPECT_EQ(syscall_name(435), "clone3");
  EXPECT_EQ(syscall_name(202), "futex");
  EXPECT_EQ(syscall_name(-1), "syscall_-1");
  EXPECT_EQ(syscall_name(100000), "syscall_100000");
}

}  // namespace
}  // namespace profctl
