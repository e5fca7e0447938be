// SPDX-License-Identifier: MIT
// The merged call tree a flame graph draws: every stack of a profile folded into one tree,
// root (all samples) first, callers above their callees, one node per distinct function
// path, with a value per sample type.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "report/capture.h"

namespace profctl {

struct FlameNode {
  std::string name;  // report_detail::frame_name; "all" for the root, "[other]" for a fold
  std::string module;
  std::string file;  // empty when unknown
  // The first and last source line of the frames merged into the node (one line with
  // `lines`); 0 when unknown. A function's box spans the lines its samples were at.
  int line = 0;
  int last_line = 0;
  bool inlined = false;
  bool other = false;          // the siblings too narrow to draw, folded into one box
  std::vector<int64_t> total;  // per sample type: the node and everything it called
  std::vector<size_t> children;
};

struct FlameTree {
  std::vector<SampleType> types;
  std::vector<FlameNode> nodes;  // nodes[0] is the root; a child comes after its parent
};

// Folds the samples of `p` into a tree keyed by frame_identity(frame, lines) (profile_text.h):
// the same function under the same callers is one node whatever its pcs. Values saturate
// (they may come from a user's capture.json); negative values count as 0, as no box can have
// a negative width. Stacks without frames are charged to the root only.
FlameTree build_flame_tree(const Profile& p, bool lines);

// The tree with every child whose total is below `min_share` of the root's total in every
// sample type replaced, per parent, by one "[other]" child carrying their summed totals.
// What is dropped would be narrower than a pixel anyway; what stays keeps its exact values,
// and the root's total is unchanged. Children come out widest first (by `order_type`).
FlameTree prune_flame_tree(const FlameTree& tree, double min_share, size_t order_type);

// The node's own value: its total less its children's (0 when they add up to more, which
// saturated or hostile values can make happen).
int64_t flame_self(const FlameTree& tree, size_t node, size_t type);

}  // namespace profctl
