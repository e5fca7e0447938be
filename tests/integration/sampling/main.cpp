// SPDX-License-Identifier: MIT
// sampling_tests: profctl attach/run/report against the programs in tests/targets/sampling.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);     // a target that died must fail a test, not kill the runner
  ::unsetenv("DEBUGINFOD_URLS");  // STYLE 14: never the network in tests (ctest also sets it empty)
  // profctl's CFI table cache (unwind/cfi_cache.h) beside this binary, not in the home of
  // whoever runs the tests; parallel tests share it, as racing profctl runs may.
  std::string exe(4096, '\0');
  ssize_t n = ::readlink("/proc/self/exe", exe.data(), exe.size());
  if (n > 0) {
    exe.resize(size_t(n));
    ::setenv("XDG_CACHE_HOME", (exe.substr(0, exe.rfind('/')) + "/test-xdg-cache").c_str(), 1);
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
