// SPDX-License-Identifier: MIT
// The one exception type (STYLE 17): a user-fatal error, caught only in main after
// everything that touched the target has been restored and detached by RAII.
#pragma once

#include <optional>
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
  // `run`'s program ended before the capture could start: profctl exits with the
  // program's own code (DESIGN "Exit codes": run returns COMMAND's status).
  UserError(int program_code, std::string message)
      : std::runtime_error(std::move(message)),
        code_(ExitCode::kTargetGone),
        program_code_(program_code) {}
  ExitCode code() const { return code_; }
  // The process exit code: the program's where it has one, else code().
  int exit_code() const { return program_code_.value_or(static_cast<int>(code_)); }
  const std::string& hint() const { return hint_; }

 private:
  ExitCode code_;
  std::optional<int> program_code_;
  std::string hint_;
};

}  // namespace profctl
