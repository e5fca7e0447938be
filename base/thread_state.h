// SPDX-License-Identifier: MIT
// The word for a /proc state letter, used alike by the wall profile's "state" label and
// the text reports: running, sleeping, disk, stopped, tracing-stop, zombie, dead, idle.
#pragma once

namespace profctl {

// nullptr for a letter /proc does not use.
inline const char* thread_state_word(char state) {
  switch (state) {
    case 'R':
      return "running";
    case 'S':
      return "sleeping";
    case 'D':
      return "disk";  // uninterruptible sleep, usually I/O
    case 'T':
      return "stopped";
    case 't':
      return "tracing-stop";
    case 'Z':
      return "zombie";
    case 'X':
      return "dead";
    case 'I':
      return "idle";
    default:
      return nullptr;
  }
}

}  // namespace profctl
