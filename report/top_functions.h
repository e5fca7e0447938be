// SPDX-License-Identifier: MIT
// The flat/cum table of functions, as `go tool pprof -top` prints it, shared by the text
// reports.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <vector>

#include "report/capture.h"

namespace profctl {

// One stack and the value it is ranked by.
struct RankedStack {
  const std::vector<Frame>* frames = nullptr;
  int64_t value = 0;
};

// "top N of M functions by TYPE:", then flat (leaf frame), flat%, sum%, cum (anywhere in the
// stack, once per stack) and cum% per function, shares of `total`. Sums saturate: the values
// may come from a user's capture.json.
void write_top_functions(const std::vector<RankedStack>& stacks, const SampleType& type,
                         int64_t total, size_t top_n, std::ostream& out);

}  // namespace profctl
