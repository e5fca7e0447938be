// SPDX-License-Identifier: MIT
// /proc/PID/task/TID/schedstat: "run_ns wait_ns timeslices" — a thread's exact CPU time,
// its run-queue wait, and how many times the kernel gave it a CPU.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "base/text_fields.h"

namespace profctl {

struct SchedStat {
  uint64_t run_ns = 0;
  uint64_t wait_ns = 0;
  uint64_t timeslices = 0;
};

inline std::optional<SchedStat> parse_schedstat(std::string_view text) {
  SchedStat s;
  if (!parse_num(next_token(text), s.run_ns) || !parse_num(next_token(text), s.wait_ns) ||
      !parse_num(next_token(text), s.timeslices)) {
    return std::nullopt;
  }
  return s;
}

}  // namespace profctl
