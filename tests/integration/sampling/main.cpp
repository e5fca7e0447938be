// SPDX-License-Identifier: MIT
// sampling_tests: profctl attach/run/report against the programs in tests/targets/sampling.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdlib>

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);     // a target that died must fail a test, not kill the runner
  ::unsetenv("DEBUGINFOD_URLS");  // STYLE 14: never the network in tests (ctest also sets it empty)
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
