// SPDX-License-Identifier: MIT
// Finding the allocator a process really calls: the dynamic linker's search order read from
// the process's own link map (this test process), and which allocation functions enter
// another probed one (hand-assembled code: a direct call, a PLT stub bound or not, up to two
// functions in between, and none).
#include <elf.h>
#include <gtest/gtest.h>
#include <link.h>
#include <unistd.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "attach/proc.h"
#include "base/fd.h"
#include "probe/alloc_nesting.h"
#include "probe/code_area.h"
#include "probe/installer.h"
#include "probe/link_map.h"
#include "tests/probe/in_process_memory.h"

namespace profctl::probe {
namespace {

// The modules dl_iterate_phdr walks (the link map, in its order), each named by the file
// mapping that holds its dynamic section, as link_map_modules names them.
std::vector<std::string> dl_iterate_order(const std::vector<MapEntry>& maps) {
  struct Ctx {
    const std::vector<MapEntry>* maps;
    std::vector<std::string> out;
  } ctx{&maps, {}};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        auto* c = static_cast<Ctx*>(data);
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          if (info->dlpi_phdr[i].p_type != PT_DYNAMIC) {
            continue;
          }
          const MapEntry* m = find_mapping(*c->maps, info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
          if (m != nullptr && !m->path.empty() && m->path[0] == '/' &&
              std::find(c->out.begin(), c->out.end(), m->path) == c->out.end()) {
            c->out.push_back(m->path);
          }
        }
        return 0;
      },
      &ctx);
  return ctx.out;
}

TEST(ProbeLinkMap, ListsTheModulesInTheDynamicLinkersOrder) {
  auto text = read_maps_text(getpid());
  ASSERT_TRUE(text);
  const std::vector<MapEntry> maps = parse_maps(*text);
  testing::InProcessMemory self;
  auto modules = link_map_modules(self, maps);
  ASSERT_TRUE(modules) << modules.error().message();
  ASSERT_GE(modules->size(), 3u);  // the test, libc, ld.so at least
  EXPECT_EQ(modules->front(), read_exe(getpid()));
  EXPECT_EQ(*modules, dl_iterate_order(maps));
  // The maps' order differs (libraries are mapped top down): the point of reading the chain.
  const std::vector<std::string> by_address = search_order({}, maps, read_exe(getpid()));
  EXPECT_EQ(by_address.front(), read_exe(getpid()));
  const std::vector<std::string> combined = search_order(*modules, maps, "");
  ASSERT_GE(combined.size(), modules->size());
  EXPECT_TRUE(std::equal(modules->begin(), modules->end(), combined.begin()));
}

// A module's code at fixed addresses, read as the scan reads the target.
struct FakeCode {
  std::map<uint64_t, std::vector<uint8_t>> functions;
  ReadCode reader() const {
    return [this](uint64_t address, size_t len) {
      for (const auto& [at, bytes] : functions) {
        if (address >= at && address < at + bytes.size()) {
          const size_t off = address - at;
          return std::vector<uint8_t>(
              bytes.begin() + static_cast<long>(off),
              bytes.begin() + static_cast<long>(std::min(bytes.size(), off + len)));
        }
      }
      return std::vector<uint8_t>{};
    };
  }
};

// E8/E9 rel32 from `at` (5 bytes) to `to`.
std::vector<uint8_t> branch(uint8_t op, uint64_t at, uint64_t to) {
  const auto rel = static_cast<int32_t>(to - (at + 5));
  std::vector<uint8_t> b = {op, 0, 0, 0, 0};
  std::memcpy(b.data() + 1, &rel, 4);
  return b;
}
// A PLT stub at `at`: endbr64; bnd jmp qword [rip + d] -> `slot`.
std::vector<uint8_t> plt_stub(uint64_t at, uint64_t slot) {
  std::vector<uint8_t> b = {0xf3, 0x0f, 0x1e, 0xfa, 0xf2, 0xff, 0x25, 0,
                            0,    0,    0,    0x0f, 0x1f, 0x44, 0,    0};
  const auto rel = static_cast<int32_t>(slot - (at + 11));
  std::memcpy(b.data() + 7, &rel, 4);
  return b;
}
std::vector<uint8_t> then_ret(std::vector<uint8_t> b) {
  b.push_back(0xc3);
  b.push_back(0xcc);
  return b;
}

constexpr uint64_t kOuter = 0x1000;
constexpr uint64_t kInner = 0x2000;    // a probed allocation function
constexpr uint64_t kStub = 0x3000;     // a PLT stub
constexpr uint64_t kBetween = 0x4000;  // a function of the module, not probed
constexpr uint64_t kSlot = 0x5000;     // the stub's GOT slot

NestingScan scan_of(const FakeCode& code) {
  NestingScan s;
  s.read = code.reader();
  s.module_lo = 0x1000;
  s.module_hi = 0x10000;
  s.probed = {kOuter, kInner};
  s.probed_names = {"outer", "tc_memalign"};
  return s;
}

TEST(ProbeNesting, ADirectCallOrJumpToAProbedFunctionNests) {
  FakeCode code;
  code.functions[kOuter] = then_ret(branch(0xe8, kOuter, kInner));
  EXPECT_TRUE(enters_probed(scan_of(code), kOuter, 0));
  code.functions[kOuter] = branch(0xe9, kOuter, kInner);
  EXPECT_TRUE(enters_probed(scan_of(code), kOuter, 5));
}

TEST(ProbeNesting, APltStubNamedForAProbedFunctionNestsBoundOrNot) {
  FakeCode code;
  code.functions[kOuter] = then_ret(branch(0xe8, kOuter, kStub));
  code.functions[kStub] = plt_stub(kStub, kSlot);
  NestingScan s = scan_of(code);
  s.plt_slots[kSlot] = "tc_memalign";  // the slot's contents are never read: lazy or bound
  EXPECT_TRUE(enters_probed(s, kOuter, 0));
  s.plt_slots[kSlot] = "pthread_mutex_lock";
  EXPECT_FALSE(enters_probed(s, kOuter, 0));
}

TEST(ProbeNesting, UpToTwoFunctionsOfTheModuleInBetweenAreFollowed) {
  FakeCode code;
  code.functions[kOuter] = branch(0xe9, kOuter, kStub);  // valloc: jmp mi_valloc@plt
  code.functions[kStub] = plt_stub(kStub, kSlot);
  code.functions[kBetween] = branch(0xe9, kBetween, kInner);  // mi_valloc: jmp the probed one
  NestingScan s = scan_of(code);
  s.plt_slots[kSlot] = "mi_valloc";
  s.defined = [](const std::string& name) -> std::optional<uint64_t> {
    return name == "mi_valloc" ? std::optional<uint64_t>(kBetween) : std::nullopt;
  };
  EXPECT_TRUE(enters_probed(s, kOuter, 5));
  // Two functions in between are followed (mimalloc's valloc: mi_valloc, mi_memalign), three
  // are not.
  code.functions[kBetween] = branch(0xe9, kBetween, 0x6000);
  code.functions[0x6000] = branch(0xe9, 0x6000, kInner);
  EXPECT_TRUE(enters_probed(s, kOuter, 5));
  code.functions[0x6000] = branch(0xe9, 0x6000, 0x7000);
  code.functions[0x7000] = branch(0xe9, 0x7000, kInner);
  EXPECT_FALSE(enters_probed(s, kOuter, 5));
}

TEST(ProbeNesting, ItselfAndOtherModulesDoNotCount) {
  FakeCode code;
  // A loop back to its own entry, and a call into another module's probed function
  // (0x20000: outside the module, and not probed as an allocation entry here).
  std::vector<uint8_t> b = branch(0xe8, kOuter, kOuter);
  std::vector<uint8_t> c = branch(0xe8, kOuter + 5, 0x20000);
  b.insert(b.end(), c.begin(), c.end());
  code.functions[kOuter] = then_ret(b);
  EXPECT_FALSE(enters_probed(scan_of(code), kOuter, 0));
}

// Heap sites in two modules (a preloaded allocator, and libc for what it lacks) need two code
// areas, placed from maps read once before either: the second must not take the first's gap
// (it did, and the install failed with EEXIST when the modules were close together).
TEST(ProbeCodeArea, ASecondAreaFromTheSameMapsAvoidsTheFirst) {
  const std::string exe = read_exe(getpid());
  Installation inst;
  testing::InProcessMemory self;
  Installer installer(self, inst);
  Result<MappedArea> first = Error{"not tried", 0};
  Result<MappedArea> second = Error{"not tried", 0};
  // This process may map something into a gap between the read and the mmap: try again.
  for (int attempt = 0; attempt < 8; ++attempt) {
    installer.unmap_areas();
    inst.code_areas.clear();
    const auto maps = parse_maps(read_file("/proc/self/maps").value());
    first = installer.map_code_area(exe, maps, code_area_size(4));
    if (!first) {
      continue;
    }
    second = installer.map_code_area(exe, maps, code_area_size(4));  // the same, stale maps
    if (second || second.error().err != EEXIST) {
      break;
    }
  }
  ASSERT_TRUE(first) << first.error().message();
  ASSERT_TRUE(second) << second.error().message();
  EXPECT_TRUE(second->address + second->size <= first->address ||
              first->address + first->size <= second->address);
  installer.unmap_areas();
}

}  // namespace
}  // namespace profctl::probe
