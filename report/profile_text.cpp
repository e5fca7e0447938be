#include "report/profile_text.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "base/saturating.h"
#include "report/heap_text.h"
#include "report/top_functions.h"
#include "report/units.h"

namespace profctl {
namespace {

using report_detail::format_value;
using report_detail::frame_line;
using report_detail::frame_name;
using report_detail::hex;
using report_detail::percent;
using report_detail::saturating_add;
using report_detail::seconds_to_ns;

struct MergedStack {
  const std::vector<Frame>* frames = nullptr;  // of the first sample seen with this stack
  std::vector<int64_t> values;
  std::string tids;  // the threads profile's groups: which threads share the stack
  std::string names;
};

// The identity of a stack for merging: pcs and the names at them (inlined calls share a pc).
std::string stack_key(const std::vector<Frame>& frames) {
  std::string key;
  for (const Frame& f : frames) {
    key += hex(f.pc);
    key += f.inlined ? "i" : "";
    key += '\x1f';
    key += frame_name(f);
    key += '\x1e';
  }
  return key;
}

void write_header(const Capture& c, const std::string& kind, const Profile& p,
                  const std::vector<int64_t>& totals, size_t nstacks, std::ostream& out) {
  out << "profctl " << kind << " profile: pid " << c.target.pid << " (" << c.target.exe
      << "), start " << (c.window.start.empty() ? "unknown" : c.window.start) << ", duration "
      << format_value(seconds_to_ns(c.window.duration_s), "nanoseconds") << '\n';
  out << "total:";
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
  if (p.dropped != 0) {
    out << "dropped: " << p.dropped << " events were lost and are not counted\n";
  }
  if (p.detail_omitted != 0) {
    out << "detail: " << p.detail_omitted
        << " events past the per-event detail cap are counted per stack, without labels\n";
  }
  for (const std::string& w : c.warnings) {
    out << "warning: " << w << '\n';
  }
}

void write_top_stacks(const Profile& p, const std::vector<MergedStack>& stacks, size_t main,
                      int64_t total, size_t top_n, std::ostream& out) {
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
      out << "        " << frame_line(f) << '\n';
    }
  }
}

}  // namespace

void write_profile_text(const Capture& c, const std::string& kind, std::ostream& out, size_t top_n,
                        const std::string& sample_index) {
  if (kind == "heap") {
    write_heap_text(c, out, HeapTextOptions{top_n, sample_index, true});
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
    auto [pos, added] = index.try_emplace(stack_key(s.frames), stacks.size());
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
      // Saturating: the values may come from a user's capture.json.
      stacks[pos->second].values[i] = sat_add(stacks[pos->second].values[i], s.values[i]);
      totals[i] = sat_add(totals[i], s.values[i]);
    }
  }
  write_header(c, kind, p, totals, stacks.size(), out);
  if (ntypes == 0) {
    out << "(the profile has no sample types)\n";
    return;
  }
  const size_t main = ntypes - 1;
  std::stable_sort(stacks.begin(), stacks.end(), [main](const auto& a, const auto& b) {
    return a.values[main] > b.values[main];
  });
  write_top_stacks(p, stacks, main, totals[main], top_n, out);
  std::vector<RankedStack> ranked;
  for (const MergedStack& m : stacks) {
    ranked.push_back({m.frames, m.values[main]});
  }
  write_top_functions(ranked, p.sample_types[main], totals[main], top_n, out);
}

}  // namespace profctl
