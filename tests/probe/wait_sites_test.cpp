// SPDX-License-Identifier: MIT
// Finding glibc's futex-wait funnels without debug symbols: the code scan from exported
// entry points must land on the very functions libc6-dbg names (this process's own libc,
// read from its own memory). And the scan's building block on hand-assembled bytes.
#include "probe/wait_sites.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "attach/proc.h"
#include "base/fd.h"
#include "probe/elf_symbols.h"

namespace profctl::probe {
namespace {

std::vector<uint8_t> read_own(uint64_t address, size_t len) {
  std::vector<uint8_t> b(len);
  std::memcpy(b.data(), reinterpret_cast<const void*>(address), len);
  return b;
}

TEST(ProbeWaitSites, RecognisesAFutexSyscall) {
  // mov eax, 202; mov edi, 0; syscall; ret
  const std::vector<uint8_t> futex = {0xb8, 0xca, 0x00, 0x00, 0x00, 0x31, 0xff, 0x0f, 0x05, 0xc3};
  // mov eax, 39 (getpid); syscall; ret
  const std::vector<uint8_t> getpid = {0xb8, 0x27, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xc3};
  EXPECT_TRUE(issues_futex_syscall(futex));
  EXPECT_FALSE(issues_futex_syscall(getpid));
  EXPECT_FALSE(issues_futex_syscall({}));
}

TEST(ProbeWaitSites, TheCodeScanFindsWhatTheDebugFileNames) {
  auto maps = parse_maps(read_file("/proc/self/maps").value());
  std::string libc;
  for (const MapEntry& m : maps) {
    if (m.path.ends_with("/libc.so.6")) {
      libc = m.path;
    }
  }
  ASSERT_FALSE(libc.empty());
  const std::vector<std::string> exported = {"pthread_mutex_lock", "pthread_clockjoin_np",
                                             "__lll_lock_wait_private", "pthread_mutex_unlock",
                                             "__lll_lock_wake_private"};
  auto syms = read_elf_functions(libc, exported);
  ASSERT_TRUE(syms) << syms.error().message();
  ASSERT_EQ(syms->functions.size(), exported.size());
  auto bias = load_bias(*syms, maps, libc);
  ASSERT_TRUE(bias);
  ASSERT_FALSE(syms->build_id.empty());
  const std::string dbg = debug_file_for_build_id(syms->build_id);
  ASSERT_FALSE(dbg.empty()) << "libc6-dbg is a dependency: no debug file for build id "
                            << syms->build_id;
  const std::vector<std::string> internal = {"__lll_lock_wait", "__futex_abstimed_wait_common",
                                             "__lll_lock_wake"};
  auto named = read_debug_functions(dbg, internal, *syms);
  ASSERT_TRUE(named) << named.error().message();
  ASSERT_EQ(named->functions.size(), internal.size());

  const uint64_t private_wait = *bias + syms->functions.at("__lll_lock_wait_private").value;
  ASSERT_GT(syms->function_starts.size(), 1000u) << "libc's .eh_frame_hdr lists its functions";
  std::vector<uint64_t> starts = syms->function_starts;
  for (uint64_t& s : starts) {
    s += *bias;
  }
  const FunctionLength lengths = lengths_from_starts(starts);
  const ElfFunction& lock = syms->functions.at("pthread_mutex_lock");
  auto lll = futex_callee(*bias + lock.value, lock.size, read_own, {private_wait}, lengths);
  ASSERT_TRUE(lll);
  EXPECT_EQ(*lll, *bias + named->functions.at("__lll_lock_wait").value);

  const ElfFunction& join = syms->functions.at("pthread_clockjoin_np");
  auto wait = futex_callee(*bias + join.value, join.size, read_own, {private_wait}, lengths);
  ASSERT_TRUE(wait);
  EXPECT_EQ(*wait, *bias + named->functions.at("__futex_abstimed_wait_common").value);

  // The release side: pthread_mutex_unlock reaches __lll_lock_wake through one function.
  const ElfFunction& unlock = syms->functions.at("pthread_mutex_unlock");
  const uint64_t private_wake = *bias + syms->functions.at("__lll_lock_wake_private").value;
  auto wake = futex_callee(*bias + unlock.value, unlock.size, read_own,
                           {private_wait, private_wake}, lengths);
  ASSERT_TRUE(wake);
  EXPECT_EQ(*wake, *bias + named->functions.at("__lll_lock_wake").value);
}

TEST(ProbeWaitSites, TheCancellationPathIsFoundFromPthreadUnwindNext) {
  auto maps = parse_maps(read_file("/proc/self/maps").value());
  std::string libc;
  for (const MapEntry& m : maps) {
    if (m.path.ends_with("/libc.so.6")) {
      libc = m.path;
    }
  }
  ASSERT_FALSE(libc.empty());
  const std::vector<std::string> exported = {"__pthread_unwind_next", "pthread_mutex_lock"};
  auto syms = read_elf_functions(libc, exported);
  ASSERT_TRUE(syms) << syms.error().message();
  ASSERT_TRUE(syms->functions.contains("__pthread_unwind_next"));
  auto bias = load_bias(*syms, maps, libc);
  ASSERT_TRUE(bias);
  const std::string dbg = debug_file_for_build_id(syms->build_id);
  ASSERT_FALSE(dbg.empty()) << "libc6-dbg is a dependency";
  const std::vector<std::string> internal = {"__pthread_unwind"};
  auto named = read_debug_functions(dbg, internal, *syms);
  ASSERT_TRUE(named) << named.error().message();
  ASSERT_TRUE(named->functions.contains("__pthread_unwind"));
  std::vector<uint64_t> starts = syms->function_starts;
  for (uint64_t& s : starts) {
    s += *bias;
  }
  const FunctionLength lengths = lengths_from_starts(starts);
  const ElfFunction& next = syms->functions.at("__pthread_unwind_next");
  auto unwind = forwarded_callee(*bias + next.value, next.size, read_own, lengths);
  ASSERT_TRUE(unwind);
  EXPECT_EQ(*unwind, *bias + named->functions.at("__pthread_unwind").value);
  // A function that branches before it calls anything forwards nowhere.
  const ElfFunction& lock = syms->functions.at("pthread_mutex_lock");
  EXPECT_FALSE(forwarded_callee(*bias + lock.value, lock.size, read_own, lengths));
}

TEST(ProbeWaitSites, AForwardingFunctionOnHandAssembledBytes) {
  // sub rsp, 8; mov rdi, [rdi+0x48]; call +0x100
  const std::vector<uint8_t> forward = {0x48, 0x83, 0xec, 0x08, 0x48, 0x8b, 0x7f,
                                        0x48, 0xe8, 0x00, 0x01, 0x00, 0x00};
  // test rdi, rdi; je +2; call +0x100
  const std::vector<uint8_t> branches = {0x48, 0x85, 0xff, 0x74, 0x02,
                                         0xe8, 0x00, 0x01, 0x00, 0x00};
  const uint64_t at = 0x400000;
  auto from = [](const std::vector<uint8_t>& code) {
    return [&code](uint64_t, size_t len) {
      return std::vector<uint8_t>(code.begin(), code.begin() + std::min(len, code.size()));
    };
  };
  EXPECT_EQ(forwarded_callee(at, forward.size(), from(forward)), at + forward.size() + 0x100);
  EXPECT_FALSE(forwarded_callee(at, branches.size(), from(branches)));
  // With CFI starts, the callee must be one of them.
  EXPECT_FALSE(forwarded_callee(at, forward.size(), from(forward),
                                lengths_from_starts({at, at + 0x40, at + 0x1000})));
}

}  // namespace
}  // namespace profctl::probe
