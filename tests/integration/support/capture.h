// SPDX-License-Identifier: MIT
// profctl as the tests see it: where the binary is, running `profctl stack`, checking a capture
// document (schema file + validator, and the shape the tests rely on), and matching a thread's
// frames against the expected stack written in the target's source comment.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "process.h"

namespace profctl::testing {

using Json = nlohmann::json;

// PROFCTL_BIN from CMake, or $PROFCTL_TEST_BIN when set. Empty if profctl is not a target yet.
std::string profctl_path();
std::string source_dir();

// Skips the test (GTEST_SKIP) when profctl is not built or ptrace is not allowed here
// (PTRACE_SEIZE of a child of ours fails with EPERM). Use as the first statement of a test.
#define PROFCTL_REQUIRE_PROFCTL()                                              \
  do {                                                                         \
    if (auto reason = ::profctl::testing::why_cannot_run(); !reason.empty()) { \
      GTEST_SKIP() << reason;                                                  \
    }                                                                          \
  } while (0)
std::string why_cannot_run();
bool can_ptrace();

// `profctl stack PID ARGS...` with DEBUGINFOD_URLS unset and a timeout.
RunResult profctl_stack(pid_t pid, const std::vector<std::string>& args = {},
                        milliseconds timeout = milliseconds(60000));
RunResult profctl(const std::vector<std::string>& args, const RunOptions& options = {});

// Runs tests/tools/validate_json.py against schema/SCHEMA (by default the capture's,
// profctl.capture-1.schema.json). Fails when either file is missing (or python3-jsonschema
// is: the validator then exits non-zero).
::testing::AssertionResult schema_valid(
    const std::string& json_text, const std::string& schema = "profctl.capture-1.schema.json");

// Parses, validates against the schema and checks the fields the tests use (types, formats).
// Records failures with ADD_FAILURE and returns nullopt when it cannot be used.
std::optional<Json> parse_capture(const std::string& json_text, pid_t pid);

// The thread with this tid / name, or nullptr.
const Json* thread_by_tid(const Json& capture, pid_t tid);
const Json* thread_by_name(const Json& capture, const std::string& name);

// One step of an expected stack.
struct Step {
  enum class Kind {
    kExe,         // one frame in the target's executable, function == name, not inlined
    kExeInlined,  // same, inlined == true
    kExeUnknown,  // one frame in the target's executable with function == null (stripped)
    kLibRun,      // one or more consecutive frames in libc.so; one of them contains `name`
    kLibOne,      // exactly one frame in libc.so whose function contains `name`
  };
  Kind kind;
  std::string name;
};
Step exe(std::string name);
Step exe_inlined(std::string name);
Step exe_unknown();
Step lib_run(std::string contains);
Step lib_one(std::string contains);
// start_thread, clone3: how every non-main thread ends.
std::vector<Step> thread_tail();
std::vector<Step> concat(std::vector<std::vector<Step>> parts);

// Matches thread["frames"] against steps exactly (all frames consumed); module paths are compared
// with the canonical path of exe_path. The failure message shows both stacks.
::testing::AssertionResult stack_matches(const Json& thread, const std::string& exe_path,
                                         const std::vector<Step>& steps);

// "basename!function[inl]" per frame, for messages.
std::string describe_frames(const Json& thread);

// The 1-based line of the first line of `file` containing `marker`, or -1.
int marker_line(const std::string& file, const std::string& marker);

std::string canonical(const std::string& path);

}  // namespace profctl::testing
