// SPDX-License-Identifier: MIT
#include "report/flamegraph_writer.h"

#include <cmath>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "report/flame_tree.h"
#include "report/flamegraph_page.h"
#include "report/profile_loss.h"
#include "report/units.h"

namespace profctl {
namespace {

using Json = nlohmann::json;

// Every name, file and module once: stacks repeat them on every level.
class StringTable {
 public:
  size_t add(const std::string& s) {
    auto [it, added] = index_.try_emplace(s, strings_.size());
    if (added) {
      strings_.push_back(s);
    }
    return it->second;
  }
  Json json() const { return Json(strings_); }

 private:
  std::unordered_map<std::string, size_t> index_;
  std::vector<std::string> strings_;
};

// Pre-order, each node as [name, module, file, first line, last line, flags, children,
// total per type...]:
// flat numbers parse several times faster than objects, and make half the bytes.
Json flat_nodes(const FlameTree& t, StringTable& strings) {
  Json out = Json::array();
  std::vector<size_t> todo{0};
  while (!todo.empty()) {
    const FlameNode& n = t.nodes[todo.back()];
    todo.pop_back();
    out.push_back(strings.add(n.name));
    out.push_back(strings.add(n.module));
    out.push_back(strings.add(n.file));
    out.push_back(n.line);
    out.push_back(n.last_line);
    out.push_back((n.inlined ? 1 : 0) | (n.other ? 2 : 0));
    out.push_back(n.children.size());
    for (int64_t v : n.total) {
      out.push_back(v);
    }
    todo.insert(todo.end(), n.children.rbegin(), n.children.rend());
  }
  return out;
}

std::string subtitle(const Capture& c, const std::string& kind, const Profile* p) {
  std::string s =
      "pid " + std::to_string(c.target.pid) + " (" + c.target.exe + "), start " +
      (c.window.start.empty() ? "unknown" : c.window.start) + ", duration " +
      report_detail::format_value(report_detail::seconds_to_ns(c.window.duration_s), "nanoseconds");
  std::string own_warning;
  if (p != nullptr) {
    if (std::string lost = loss_account(kind, *p); !lost.empty()) {
      s += "; " + partial_line(kind, *p) + "; " + lost;
    }
    own_warning = loss_warning(kind, *p);  // said above: not again
  }
  for (const std::string& w : c.warnings) {
    if (w != own_warning) {
      s += "; " + w;
    }
  }
  return s;
}

// JSON inside <script> must not close it: '<' only occurs inside JSON strings, where
// \u003c means the same character.
std::string script_safe(const std::string& json) {
  std::string out;
  out.reserve(json.size());
  for (char ch : json) {
    if (ch == '<') {
      out += "\\u003c";
    } else {
      out += ch;
    }
  }
  return out;
}

}  // namespace

void write_flamegraph(const Capture& c, const std::string& kind, std::ostream& out,
                      const FlamegraphOptions& opts) {
  auto it = c.profiles.find(kind);
  const Profile* p = it == c.profiles.end() ? nullptr : &it->second;
  Profile empty;
  const Profile& profile = p != nullptr ? *p : empty;
  const size_t main = main_sample_type(profile, opts.sample_index);
  const FlameTree full = build_flame_tree(profile, opts.lines);
  const FlameTree tree = prune_flame_tree(full, opts.min_share, main);
  size_t folded = 0;
  for (const FlameNode& n : tree.nodes) {
    folded += n.other ? 1 : 0;
  }
  StringTable strings;
  Json data;
  data["title"] = p == nullptr ? "profctl: no " + kind + " profile in this capture"
                               : "profctl " + kind + " profile";
  data["subtitle"] = subtitle(c, kind, p);
  data["kind"] = kind;
  data["types"] = Json::array();
  for (const SampleType& st : tree.types) {
    data["types"].push_back({{"type", st.type}, {"unit", st.unit}});
  }
  data["main"] = main;
  data["nodes"] = flat_nodes(tree, strings);
  data["strings"] = strings.json();
  // Nodes of the full tree that are not drawn (the "[other]" boxes stand for them).
  data["folded"] = full.nodes.size() + folded - tree.nodes.size();
  data["min_fraction"] = static_cast<int64_t>(std::llround(1.0 / opts.min_share));
  const std::string_view page = report_detail::kFlamegraphPage;
  const size_t at = page.find(report_detail::kFlamegraphDataMarker);
  out << page.substr(0, at);
  out << script_safe(data.dump(-1, ' ', false, Json::error_handler_t::replace));
  out << page.substr(at + report_detail::kFlamegraphDataMarker.size());
}

}  // namespace profctl
