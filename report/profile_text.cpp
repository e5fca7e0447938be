// SPDX-License-Identifier: MIT
#include "report/profile_text.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>

#include "report/heap_text.h"
#include "report/profile_loss.h"
#include "report/units.h"

namespace profctl {
namespace {

using report_detail::format_value;
using report_detail::frame_name;

struct MergedStack {
  const std::vector<Frame>* frames = nullptr;  // of the first sample seen with this stack
  std::vector<int64_t> values;
  std::string tids;  // the threads profile's groups: which threads share the stack
  std::string names;
};

struct FunctionCost {
  int64_t flat = 0;
  int64_t cum = 0;
};

std::string percent(int64_t v, int64_t total) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%.2f%%",
                total == 0 ? 0.0 : 100.0 * static_cast<double>(v) / static_cast<double>(total));
  return buf;
}

std::string right(const std::string& s, size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

// The identity of a stack for merging: the identities of its frames, in order.
std::string stack_key(const std::vector<Frame>& frames, bool lines) {
  std::string key;
  for (const Frame& f : frames) {
    key += frame_identity(f, lines);
    key += f.inlined ? "\x1di" : "";
    key += '\x1e';
  }
  return key;
}

// A frame of a merged stack. Merged stacks hold many pcs, so no pc or offset is shown: the
// function, its source file (and line with --lines), and the module.
std::string frame_line(const Frame& f, bool lines) {
  std::string s = frame_name(f);
  if (f.file) {
    s += "  at " + *f.file;
    if (lines && f.line) {
      s += ":" + std::to_string(*f.line);
    }
  }
  s += f.inlined ? "  (inlined)" : "  (" + f.module + ")";
  return s;
}

// What the top-functions table calls a row: the function, and with --lines its file:line.
std::string row_name(const Frame& f, bool lines) {
  std::string s = frame_name(f);
  if (lines && f.file) {
    s += " " + *f.file + (f.line ? ":" + std::to_string(*f.line) : "");
  }
  return s;
}

void write_header(const Capture& c, const std::string& kind, const Profile& p,
                  const std::vector<int64_t>& totals, size_t nstacks, std::ostream& out) {
  out << "profctl " << kind << " profile: pid " << c.target.pid << " (" << c.target.exe
      << "), start " << (c.window.start.empty() ? "unknown" : c.window.start) << ", duration "
      << format_value(report_detail::seconds_to_ns(c.window.duration_s), "nanoseconds");
  if (c.window.requested_hz > 0) {
    char buf[96];
    std::snprintf(buf, sizeof buf, ", sampled at %.1f Hz of %g requested", c.window.achieved_hz,
                  c.window.requested_hz);
    out << buf;
  }
  out << '\n';
  const std::string partial = partial_line(kind, p);
  if (!partial.empty()) {
    out << partial << '\n';
  }
  out << (partial.empty() ? "total:" : "total (lower bounds):");
  for (size_t i = 0; i < p.sample_types.size(); ++i) {
    out << (i == 0 ? " " : ", ") << p.sample_types[i].type << ' '
        << format_value(totals[i], p.sample_types[i].unit);
  }
  out << " (" << p.samples.size() << (p.samples.size() == 1 ? " entry, " : " entries, ") << nstacks
      << (nstacks == 1 ? " distinct stack)" : " distinct stacks)") << '\n';
  if (p.period_type) {
    out << "period: " << p.period_type->type << ' ' << format_value(p.period, p.period_type->unit)
        << '\n';
  }
  if (std::string lost = loss_account(kind, p); !lost.empty()) {
    out << lost << '\n';
  }
  if (p.detail_omitted != 0) {
    out << "detail: " << p.detail_omitted
        << " events past the per-event detail cap are counted per stack, without labels\n";
  }
  const std::string own_warning = loss_warning(kind, p);  // said above: not again
  for (const std::string& w : c.warnings) {
    if (w != own_warning) {
      out << "warning: " << w << '\n';
    }
  }
}

void write_top_stacks(const Profile& p, const std::vector<MergedStack>& stacks, size_t main,
                      int64_t total, const TextOptions& opts, std::ostream& out) {
  const size_t top_n = opts.top_n;
  const SampleType& st = p.sample_types[main];
  out << "\ntop " << std::min(top_n, stacks.size()) << " of " << stacks.size() << " stacks by "
      << st.type << ":\n";
  for (size_t r = 0; r < stacks.size() && r < top_n; ++r) {
    const MergedStack& s = stacks[r];
    out << "\n  #" << r + 1 << "  " << st.type << ' ' << format_value(s.values[main], st.unit)
        << " (" << percent(s.values[main], total) << ')';
    for (size_t i = 0; i < p.sample_types.size(); ++i) {
      if (i != main) {
        out << ", " << p.sample_types[i].type << ' '
            << format_value(s.values[i], p.sample_types[i].unit);
      }
    }
    out << '\n';
    if (!s.tids.empty()) {
      out << "        threads " << s.tids << " (" << s.names << ")\n";
    }
    if (s.frames->empty()) {
      out << "        (no frames)\n";
    }
    for (const Frame& f : *s.frames) {
      out << "        " << frame_line(f, opts.lines) << '\n';
    }
  }
}

void write_top_functions(const Profile& p, const std::vector<MergedStack>& stacks, size_t main,
                         int64_t total, const TextOptions& opts, std::ostream& out) {
  const size_t top_n = opts.top_n;
  std::map<std::string, FunctionCost> costs;  // by frame identity
  std::map<std::string, std::string> names;   // identity -> row name
  for (const MergedStack& s : stacks) {
    const int64_t v = s.values[main];
    if (!s.frames->empty()) {
      {
        int64_t& flat = costs[frame_identity(s.frames->front(), opts.lines)].flat;
        flat = report_detail::saturating_add(flat, v);
      }
    }
    std::set<std::string> seen;  // recursion counts once per stack toward cum
    for (const Frame& f : *s.frames) {
      if (std::string id = frame_identity(f, opts.lines); seen.insert(id).second) {
        costs[id].cum = report_detail::saturating_add(costs[id].cum, v);
        names.try_emplace(std::move(id), row_name(f, opts.lines));
      }
    }
  }
  std::vector<std::pair<std::string, FunctionCost>> rows;
  for (const auto& [id, cost] : costs) {
    rows.emplace_back(names[id], cost);
  }
  std::stable_sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    if (a.second.flat != b.second.flat) {
      return a.second.flat > b.second.flat;
    }
    return a.second.cum > b.second.cum;
  });
  const std::string& unit = p.sample_types[main].unit;
  out << "\ntop " << std::min(top_n, rows.size()) << " of " << rows.size() << " functions by "
      << p.sample_types[main].type << ":\n";
  out << right("flat", 12) << right("flat%", 8) << right("sum%", 8) << right("cum", 12)
      << right("cum%", 8) << "  function\n";
  int64_t sum = 0;
  for (size_t r = 0; r < rows.size() && r < top_n; ++r) {
    const auto& [name, cost] = rows[r];
    sum = report_detail::saturating_add(sum, cost.flat);
    out << right(format_value(cost.flat, unit), 12) << right(percent(cost.flat, total), 8)
        << right(percent(sum, total), 8) << right(format_value(cost.cum, unit), 12)
        << right(percent(cost.cum, total), 8) << "  " << name << '\n';
  }
}

}  // namespace

std::string frame_identity(const Frame& f, bool lines) {
  std::string id = report_detail::function_key(f);
  if (lines) {
    id += '\x1f';
    id += f.file.value_or("");
    id += ':';
    id += f.line ? std::to_string(*f.line) : "";
  }
  return id;
}

// The block and mutex profiles: which locks (and futex words) the waits were on, by the
// main value, named by their symbol when they live in static storage.
void write_top_locks(const Profile& p, size_t main, int64_t total, const TextOptions& opts,
                     std::ostream& out) {
  struct Lock {
    std::string name;
    std::vector<int64_t> values;
  };
  std::map<std::string, Lock> locks;
  for (const Sample& s : p.samples) {
    auto a = s.labels.find("lock");
    if (a == s.labels.end()) {
      continue;
    }
    Lock& l = locks[a->second];
    if (auto n = s.labels.find("lock_name"); n != s.labels.end()) {
      l.name = n->second;
    }
    l.values.resize(p.sample_types.size(), 0);
    for (size_t i = 0; i < l.values.size() && i < s.values.size(); ++i) {
      l.values[i] = report_detail::saturating_add(l.values[i], s.values[i]);
    }
  }
  if (locks.empty()) {
    return;
  }
  std::vector<std::pair<std::string, Lock>> rows(locks.begin(), locks.end());
  std::stable_sort(rows.begin(), rows.end(), [main](const auto& a, const auto& b) {
    return a.second.values[main] > b.second.values[main];
  });
  out << "\ntop " << std::min(opts.top_n, rows.size()) << " of " << rows.size()
      << " locks and futex words by " << p.sample_types[main].type << ":\n";
  for (size_t r = 0; r < rows.size() && r < opts.top_n; ++r) {
    const auto& [addr, l] = rows[r];
    out << "  " << format_value(l.values[main], p.sample_types[main].unit) << "  "
        << percent(l.values[main], total) << "  " << addr;
    if (!l.name.empty()) {
      out << " (" << l.name << ")";
    }
    for (size_t i = 0; i < l.values.size(); ++i) {
      if (i != main) {
        out << "  " << p.sample_types[i].type << " "
            << format_value(l.values[i], p.sample_types[i].unit);
      }
    }
    out << '\n';
  }
}

void write_profile_text(const Capture& c, const std::string& kind, std::ostream& out,
                        const TextOptions& opts) {
  if (kind == "heap") {
    // Go's debug=1 heap profile with a summary in comments (report/heap_text.h).
    write_heap_text(c, out, HeapTextOptions{opts.top_n, opts.sample_index, true});
    return;
  }
  auto it = c.profiles.find(kind);
  if (it == c.profiles.end()) {
    out << "profctl: no " << kind << " profile in this capture\n";
    return;
  }
  const Profile& p = it->second;
  const size_t ntypes = p.sample_types.size();

  std::map<std::string, size_t> index;  // stack key -> position in `stacks`
  std::vector<MergedStack> stacks;
  std::vector<int64_t> totals(ntypes, 0);
  for (const Sample& s : p.samples) {
    auto [pos, added] = index.try_emplace(stack_key(s.frames, opts.lines), stacks.size());
    if (added) {
      stacks.push_back(MergedStack{&s.frames, std::vector<int64_t>(ntypes, 0), {}, {}});
    }
    MergedStack& m = stacks[pos->second];
    if (auto t = s.labels.find("tids"); t != s.labels.end()) {
      m.tids += (m.tids.empty() ? "" : ",") + t->second;
      auto n = s.labels.find("thread_names");
      m.names += (m.names.empty() ? "" : ",") + (n == s.labels.end() ? std::string() : n->second);
    }
    for (size_t i = 0; i < ntypes && i < s.values.size(); ++i) {
      stacks[pos->second].values[i] =
          report_detail::saturating_add(stacks[pos->second].values[i], s.values[i]);
      totals[i] = report_detail::saturating_add(totals[i], s.values[i]);
    }
  }
  write_header(c, kind, p, totals, stacks.size(), out);
  if (kind == "mutex") {
    out << "side: waiters (each contention is charged to the stack that waited for the lock; "
           "mutex_holders has the releasing side)\n";
  } else if (kind == "mutex_holders") {
    out << "side: holders (each contention's delay is charged to the stack that released the "
           "lock to the waiter, as Go's mutex profile does)\n";
  }
  if (ntypes == 0) {
    out << "(the profile has no sample types)\n";
    return;
  }
  const size_t main = ntypes - 1;
  std::stable_sort(stacks.begin(), stacks.end(), [main](const auto& a, const auto& b) {
    return a.values[main] > b.values[main];
  });
  write_top_stacks(p, stacks, main, totals[main], opts, out);
  write_top_functions(p, stacks, main, totals[main], opts, out);
  if (kind == "mutex" || kind == "mutex_holders" || kind == "block") {
    write_top_locks(p, main, totals[main], opts, out);
  }
}

}  // namespace profctl
