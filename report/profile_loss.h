// SPDX-License-Identifier: MIT
// The words every output uses for what a profile lost (ProfileLoss, report/capture.h): the
// "partial:" line a lossy profile carries in its header, and its one-line account. The text
// and heap text reports, the pprof comments, the flame graph's subtitle, the end-of-capture
// summary and the capture's warnings (stderr) all print these, from the one ProfileLoss
// computed when the capture was assembled, so that no two outputs give different numbers.
#pragma once

#include <string>

#include "report/capture.h"

namespace profctl {

// What a profile's lost events are called: "allocation records" (heap), "wait records"
// (block, mutex, mutex_holders), "samples" (cpu, wall), "thread creations"
// (threadcreate), "events" otherwise.
std::string loss_unit(const std::string& kind);

// The lost share as people read it: "87.3%", "<0.1%" (something, but less than 0.05%),
// ">99.9%" (not all), "100%".
std::string loss_percent(const ProfileLoss& l);

// "partial: 87.3% of allocation records lost (ring full); totals are lower bounds", or ""
// when the profile lost nothing. A profile read from an older capture (dropped, no loss):
// "partial: 12 events lost; totals are lower bounds".
std::string partial_line(const std::string& kind, const Profile& p);

// "lost 4571519 of 5240000 allocation records (87.3%): 4500000 ring full, 71519 not
// unwound in time" (only the causes that lost something), or "" when nothing was lost.
std::string loss_account(const std::string& kind, const Profile& p);

// The capture's warning for a lossy profile (stderr, and every output's warnings):
// "heap: partial: lost ... (87.3%): ...; totals are lower bounds (to lose less: ...)".
// "" when nothing was lost.
std::string loss_warning(const std::string& kind, const Profile& p);

}  // namespace profctl
