// SPDX-License-Identifier: MIT
// profctl's own signal handling during a capture: SIGINT/SIGTERM/SIGHUP end the capture
// (attach) or are forwarded to the program profctl started (run). Either way the handler
// only sets a flag or forwards: detaching and restoring happen on the normal path.
#pragma once

#include <sys/types.h>

#include <atomic>

namespace profctl::cli {

// Installs the handlers (no SA_RESTART, so a blocking waitpid returns at once).
// forward_to > 0: signals sent by another process are forwarded to that pid instead of
// ending the capture; a terminal's ^C already reaches the child itself.
void install_capture_signals(pid_t forward_to);
// Starts forwarding (run mode, once the command exists).
void set_forward_pid(pid_t pid);
const std::atomic<bool>& stop_requested();
int last_stop_signal();

}  // namespace profctl::cli
