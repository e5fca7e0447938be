// SPDX-License-Identifier: MIT
// Helpers shared by the sampling targets (header-only, C), on top of ../target_util.h.
#ifndef PROFCTL_TESTS_TARGETS_SAMPLING_SAMPLING_UTIL_H
#define PROFCTL_TESTS_TARGETS_SAMPLING_SAMPLING_UTIL_H

#include <signal.h>
#include <sys/prctl.h>
#include <time.h>

#include "../target_util.h"

// Dies with its parent (the test, or profctl in `profctl run`): a killed test leaves nothing
// behind.
static inline void sampling_die_with_parent(void) { prctl(PR_SET_PDEATHSIG, SIGKILL); }

static inline long long sampling_clock_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

#endif
