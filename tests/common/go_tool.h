// SPDX-License-Identifier: MIT
// `go`, for the unit and integration tests that read profctl's pprof files with `go tool
// pprof` and for the Go target: one lookup and one behaviour. golang-go is a test
// dependency (scripts/install-deps.sh installs it, and CI runs scripts/test.sh, which runs
// install-deps.sh first: CI always has go). So a missing go is a failure that says how to
// fix it, never a skip: a skipped check would let a broken pprof writer pass.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

namespace profctl::testing {

// The go binary CMake found when it configured the build (tests/CMakeLists.txt), or "" when
// there was none or it is no longer executable.
inline std::string go_binary() {
  const std::string go = PROFCTL_GO_EXE;
  return !go.empty() && ::access(go.c_str(), X_OK) == 0 ? go : std::string();
}

inline constexpr const char* kNoGo =
    "go is missing: golang-go is a test dependency (scripts/install-deps.sh installs it; "
    "re-run cmake after); without it the pprof files are not checked, which is a failure, "
    "not a skip";

}  // namespace profctl::testing

// In a test body or a fixture's SetUp: fails the test, and ends it, when go is missing.
#define PROFCTL_REQUIRE_GO()                       \
  do {                                             \
    if (::profctl::testing::go_binary().empty()) { \
      GTEST_FAIL() << ::profctl::testing::kNoGo;   \
    }                                              \
  } while (0)
