// SPDX-License-Identifier: MIT
#include "report/flame_tree.h"

#include <algorithm>
#include <unordered_map>

#include "base/saturating.h"
#include "report/profile_text.h"
#include "report/units.h"

namespace profctl {
namespace {

// Child lookup while building: (parent, frame identity) -> node. One map for the whole tree
// rather than one per node: trees of 50,000 stacks have hundreds of thousands of nodes.
struct ChildKey {
  size_t parent;
  std::string identity;
  bool operator==(const ChildKey&) const = default;
};
struct ChildKeyHash {
  size_t operator()(const ChildKey& k) const {
    return std::hash<std::string>()(k.identity) ^ (k.parent * 0x9e3779b97f4a7c15ULL);
  }
};

FlameNode node_for(const Frame& f, size_t ntypes) {
  FlameNode n;
  n.name = report_detail::frame_name(f);
  n.module = f.module;
  n.file = f.file.value_or("");
  n.line = f.line.value_or(0);
  n.last_line = n.line;
  n.inlined = f.inlined;
  n.total.assign(ntypes, 0);
  return n;
}

void add_values(std::vector<int64_t>& into, const std::vector<int64_t>& values) {
  for (size_t i = 0; i < into.size() && i < values.size(); ++i) {
    into[i] = sat_add(into[i], std::max<int64_t>(values[i], 0));
  }
}

}  // namespace

FlameTree build_flame_tree(const Profile& p, bool lines) {
  FlameTree t;
  t.types = p.sample_types;
  const size_t ntypes = t.types.size();
  FlameNode root;
  root.name = "all";
  root.total.assign(ntypes, 0);
  t.nodes.push_back(std::move(root));
  std::unordered_map<ChildKey, size_t, ChildKeyHash> index;
  for (const Sample& s : p.samples) {
    add_values(t.nodes[0].total, s.values);
    size_t at = 0;
    // Frames are innermost first, and an inlined frame comes before the frame it was
    // inlined into: walking backwards goes from the root outwards in call order.
    for (auto f = s.frames.rbegin(); f != s.frames.rend(); ++f) {
      std::string id = frame_identity(*f, lines);
      if (f->inlined) {
        id += "\x1di";
      }
      auto [pos, added] = index.try_emplace(ChildKey{at, std::move(id)}, t.nodes.size());
      if (added) {
        t.nodes.push_back(node_for(*f, ntypes));
        t.nodes[at].children.push_back(pos->second);
      }
      at = pos->second;
      add_values(t.nodes[at].total, s.values);
      if (f->line && *f->line > 0) {
        FlameNode& n = t.nodes[at];
        n.line = n.line == 0 ? *f->line : std::min(n.line, *f->line);
        n.last_line = std::max(n.last_line, *f->line);
      }
    }
  }
  return t;
}

FlameTree prune_flame_tree(const FlameTree& in, double min_share, size_t order_type) {
  FlameTree out;
  out.types = in.types;
  if (in.nodes.empty()) {
    return out;
  }
  const size_t ntypes = in.types.size();
  std::vector<double> threshold(ntypes);
  for (size_t i = 0; i < ntypes; ++i) {
    threshold[i] = static_cast<double>(in.nodes[0].total[i]) * min_share;
  }
  auto wide_enough = [&](const FlameNode& n) {
    for (size_t i = 0; i < ntypes; ++i) {
      if (n.total[i] > 0 && static_cast<double>(n.total[i]) >= threshold[i]) {
        return true;
      }
    }
    return false;
  };
  // Depth first with an explicit stack: a deep recursion in the target makes a deep tree.
  struct Step {
    size_t from;  // node of `in`
    size_t to;    // its copy in `out`
  };
  auto copy_node = [&](size_t from) {
    FlameNode n = in.nodes[from];
    n.children.clear();
    out.nodes.push_back(std::move(n));
    return out.nodes.size() - 1;
  };
  std::vector<Step> todo{{0, copy_node(0)}};
  while (!todo.empty()) {
    const Step step = todo.back();
    todo.pop_back();
    std::vector<size_t> kids = in.nodes[step.from].children;
    std::stable_sort(kids.begin(), kids.end(), [&](size_t a, size_t b) {
      const auto& ta = in.nodes[a].total;
      const auto& tb = in.nodes[b].total;
      return order_type < ntypes && ta[order_type] > tb[order_type];
    });
    FlameNode other;
    other.name = "[other]";
    other.other = true;
    other.total.assign(ntypes, 0);
    bool any_other = false;
    std::vector<Step> next;
    for (size_t k : kids) {
      if (!wide_enough(in.nodes[k])) {
        add_values(other.total, in.nodes[k].total);
        any_other = true;
        continue;
      }
      const size_t copy = copy_node(k);
      out.nodes[step.to].children.push_back(copy);
      next.push_back({k, copy});
    }
    if (any_other) {
      out.nodes.push_back(std::move(other));
      out.nodes[step.to].children.push_back(out.nodes.size() - 1);
    }
    // Reversed onto the stack so that children are visited, and laid out, in order.
    todo.insert(todo.end(), next.rbegin(), next.rend());
  }
  return out;
}

int64_t flame_self(const FlameTree& t, size_t node, size_t type) {
  const FlameNode& n = t.nodes[node];
  int64_t children = 0;
  for (size_t c : n.children) {
    children = sat_add(children, t.nodes[c].total[type]);
  }
  return std::max<int64_t>(sat_sub(n.total[type], children), 0);
}

}  // namespace profctl
