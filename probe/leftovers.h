// SPDX-License-Identifier: MIT
// What earlier profctl sessions left in a target when they were killed (SIGKILL cannot be
// caught, so their detach never ran): probe code areas, shared areas, patched entry
// points, hijacked return addresses, a memfd's descriptor. Found and removed inside the
// stopped world before new probes go in, so a target profctl was killed on is left clean
// by the next attach, and probes are never stacked on probes.
//
// Everything here is read from the target, so it is hostile input: the blob header and
// control block only point at candidates, and nothing is written unless the target's
// memory and the module's file agree that it is profctl's own patch (entry bytes that
// differ from the file only in the patch span, and jump into the area being removed).
#pragma once

#include <string>
#include <vector>

namespace profctl {
class StoppedWorld;
}

namespace profctl::probe {

struct LeftoverReport {
  std::vector<std::string> notes;  // what was found and removed, or left and why
  bool found = false;              // an earlier session's probes were there
  bool clean = true;               // nothing of an earlier session remains
  // One note per area left because a thread was inside it (a call through it had not
  // returned), apart from `notes`. Its entry points are restored and it is disabled, so no
  // thread enters it again: run the target a moment and call again, and it goes.
  std::vector<std::string> in_use;
};

// `root`: /proc/PID/root, through which the target's module files are read.
LeftoverReport remove_leftovers(StoppedWorld& world, const std::string& root);

}  // namespace profctl::probe
