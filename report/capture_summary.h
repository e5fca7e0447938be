// SPDX-License-Identifier: MIT
// The one screen `attach`/`run -o` print on stderr at the end, like the head of `perf report
// --stdio`: the window, the samples, the files written, and the top functions of each
// profile.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "report/capture.h"

namespace profctl {

struct CaptureSummary {
  uint64_t samples = 0;  // threads stopped and snapshotted, and the kernel's sample records
  uint64_t reused = 0;   // samples that needed no stop
  uint64_t lost = 0;     // threads that could not be stopped in time
  double achieved_hz = 0;
  double requested_hz = 0;         // 0: no sampling (the sample line is left out)
  std::string dir;                 // the output directory
  std::vector<std::string> files;  // paths written under it
};

// cpu and wall are ranked by the running (leaf) function; the probe profiles, whose leaf is
// malloc or a glibc wait, by the program's own frame nearest to it. Functions are named as
// the text reports name them (report_detail::frame_name: module+offset when unnamed), and
// every profile kind has its line, also when its main sample type is empty ("heap
// (inuse_space): nothing in use at the end; alloc_space: f 60.0%, ...").
void write_capture_summary(const Capture& c, const CaptureSummary& s, std::ostream& out);

}  // namespace profctl
