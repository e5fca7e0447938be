// SPDX-License-Identifier: MIT
// The one exception type (STYLE 17): a user-fatal error, caught only in main after
// everything that touched the target has been restored and detached by RAII.
#pragma once

#include <stdexcept>
#include <string>

namespace profctl {

// docs/DESIGN.md "Exit codes".
enum class ExitCode : int {
  kOk = 0,
  kUsage = 1,       // bad command line, unreadable/corrupt capture file
  kAttach = 2,      // the target cannot be attached
  kTargetGone = 3,  // the target went away during a capture
  kInternal = 4,    // internal error; the target was detached and restored
  kRegression = 5,  // profctl diff: a --fail-if threshold was crossed
  kLeftBehind = 6,  // the probes could not be removed completely (stderr lists what is left)
};

class UserError : public std::runtime_error {
 public:
  UserError(ExitCode code, std::string message, std::string hint = {})
      : std::runtime_error(std::move(message)), code_(code), hint_(std::move(hint)) {}
  ExitCode code() const { return code_; }
  const std::string& hint() const { return hint_; }

 private:
  ExitCode code_;
  std::string hint_;
};

}  // namespace profctl
