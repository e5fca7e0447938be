// SPDX-License-Identifier: MIT
// ProfileData: one profile kind's samples, aggregated by (stack, labels), as Go's
// runtime/pprof keeps its buckets. Pure data; symbolized later, once per unique pc.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "profile/stack_table.h"

namespace profctl {

struct ValueType {
  std::string type;
  std::string unit;
};

class ProfileData {
 public:
  struct Row {
    StackId stack = 0;
    std::map<std::string, std::string> labels;
    std::vector<int64_t> values;
    // The address space the stack's pcs belong to (Snapshot::space): with child processes
    // followed, the same pcs mean different code in different images. 0: the target's.
    uint32_t space = 0;
  };

  ProfileData() = default;
  ProfileData(std::vector<ValueType> types, ValueType period_type, int64_t period)
      : types_(std::move(types)), period_type_(std::move(period_type)), period_(period) {}

  // Adds `values` to the row of (stack, labels, space), creating it at zero.
  void add(StackId stack, const std::map<std::string, std::string>& labels,
           const std::vector<int64_t>& values, uint32_t space = 0);

  const std::vector<ValueType>& types() const { return types_; }
  const ValueType& period_type() const { return period_type_; }
  int64_t period() const { return period_; }
  const std::vector<Row>& rows() const { return rows_; }
  uint64_t dropped = 0;
  // The sample type a viewer shows first (pprof's default_sample_type), e.g. the heap
  // profile's "inuse_space"; empty: the viewer's choice (pprof takes the last type).
  std::string default_type;
  // Events counted in their stack's row without the labels of their own (past a detail
  // cap, e.g. the threadcreate profile's creator and new_tid): counted, only less detailed.
  uint64_t detail_omitted = 0;

 private:
  std::vector<ValueType> types_;
  ValueType period_type_;
  int64_t period_ = 0;
  std::vector<Row> rows_;
  std::map<std::tuple<StackId, uint32_t, std::map<std::string, std::string>>, size_t> index_;
};

// The word for a /proc state letter, as the wall profile's "state" label uses it.
const char* state_word(char state);

}  // namespace profctl
