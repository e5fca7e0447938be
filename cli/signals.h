// SPDX-License-Identifier: MIT
// profctl's own signal handling during a capture: SIGINT/SIGTERM/SIGHUP end the capture. For
// `run` they are also forwarded to the program profctl started, which gets a grace (see
// kRunStopGrace) to exit before the capture ends without it. Either way the handler only sets
// a flag or forwards: detaching and restoring happen on the normal path.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <string>

namespace profctl::cli {

// `run`: after SIGINT/SIGTERM/SIGHUP the program has this long to exit; then the capture
// ends anyway (detach, write) and profctl exits, leaving the program running untraced.
inline constexpr std::chrono::milliseconds kRunStopGrace{1000};

// Installs the handlers (no SA_RESTART, so a blocking wait returns at once).
// forward_to > 0: signals sent by another process are also forwarded to that pid (a
// terminal's ^C already reaches the child itself).
void install_capture_signals(pid_t forward_to);
// Starts forwarding (run mode, once the command exists); a signal that came before is
// forwarded now.
void set_forward_pid(pid_t pid);
const std::atomic<bool>& stop_requested();
int last_stop_signal();
// "SIGTERM" ("signal N" when unnamed).
std::string signal_name(int sig);
// When the first stop signal arrived (steady_clock), nullopt before any.
std::optional<std::chrono::steady_clock::time_point> stop_requested_at();

// `run`, after the capture: waits for the program's exit and returns its raw wait status.
// Without a stop signal it waits as long as the program runs; once one has come (before or
// during the wait), only until kRunStopGrace after it: nullopt then, the program runs on.
std::optional<int> wait_program_exit(pid_t pid);

}  // namespace profctl::cli
