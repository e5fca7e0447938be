// SPDX-License-Identifier: MIT
// WalkedStacks: stacks the target walked itself (the probes' walked records, probe_abi.h
// ABI v7). A ring names each distinct stack by an id and sends its pcs once, with the first
// record of the id; later records carry the id alone. This maps (ring, id) to the
// collector's own StackTable ids, in record order (a definition is always read before its
// uses: the blob publishes an id only after its defining record is committed).
#pragma once

#include <tsl/robin_map.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "profile/stack_table.h"

namespace profctl {

struct WalkedStack {
  uint64_t ring = 0;          // whose ids: the process's tag (0: the target's own ring)
  uint64_t id = 0;            // the ring's stack id
  std::vector<uint64_t> pcs;  // innermost first (pcs[0] the probed function): the
                              // definition; empty: defined by an earlier record
};

class WalkedStacks {
 public:
  // Ids remembered at most (memory: ~40 bytes each); past it new ids map to the empty stack.
  explicit WalkedStacks(size_t max_ids = size_t{1} << 22) : max_ids_(max_ids) {}

  // The StackTable id of `w`. An id never defined (its record lost to a corrupt ring) is the
  // empty stack, counted in unknown().
  StackId resolve(StackTable& table, const WalkedStack& w) {
    return resolve(table, w.ring, w.id, w.pcs);
  }
  StackId resolve(StackTable& table, uint64_t ring, uint64_t id, std::span<const uint64_t> pcs);
  uint64_t unknown() const { return unknown_; }
  uint64_t capped() const { return capped_; }

 private:
  struct Key {
    uint64_t ring, id;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    size_t operator()(const Key& k) const { return k.id ^ (k.ring * 0x9E3779B97F4A7C15ULL); }
  };
  tsl::robin_map<Key, StackId, KeyHash> ids_;  // one lookup per walked record
  std::vector<UnwoundFrame> frames_;           // scratch
  size_t max_ids_;
  uint64_t unknown_ = 0;
  uint64_t capped_ = 0;
};

}  // namespace profctl
