// SPDX-License-Identifier: MIT
#include "report/heap_text.h"

#include <algorithm>
#include <cctype>
#include <cinttypes>
#include <cstdio>
#include <sstream>

#include "base/saturating.h"
#include "report/profile_loss.h"
#include "report/top_functions.h"
#include "report/units.h"

namespace profctl {
namespace {

using report_detail::format_value;
using report_detail::frame_line;
using report_detail::frame_name;
using report_detail::percent;

// Positions of Go's four heap sample types; a capture read from a file may lack some.
struct GoTypes {
  std::optional<size_t> alloc_objects, alloc_space, inuse_objects, inuse_space;
  explicit GoTypes(const Profile& p)
      : alloc_objects(find_sample_type(p, "alloc_objects")),
        alloc_space(find_sample_type(p, "alloc_space")),
        inuse_objects(find_sample_type(p, "inuse_objects")),
        inuse_space(find_sample_type(p, "inuse_space")) {}
};

int64_t at(const std::vector<int64_t>& v, std::optional<size_t> i) {
  return i && *i < v.size() ? v[*i] : 0;
}

// The unscaled values Go's records print; a capture without them falls back to the values.
const std::vector<int64_t>& raw_of(const Sample& s) {
  return s.raw_values.empty() ? s.values : s.raw_values;
}

uint64_t counter(const CaptureHeap* h, const char* name) {
  if (h == nullptr) {
    return 0;
  }
  auto it = h->counters.find(name);
  return it == h->counters.end() ? 0 : it->second;
}

// "1 object", "3 objects".
template <class N>
std::string count(N n, const char* word) {
  return std::to_string(n) + ' ' + word + (n == 1 ? "" : "s");
}

std::string bytes(int64_t v) { return format_value(v, "bytes"); }
std::string duration(uint64_t ns) { return format_value(sat_i64(ns), "nanoseconds"); }

// Every line of `text` as a '#' comment, so that pprof's text parser skips it.
void comment(std::ostream& out, const std::string& text) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    out << (line.empty() ? "#" : "# " + line) << '\n';
  }
}

void write_frames(std::ostream& out, const std::vector<Frame>& frames) {
  if (frames.empty()) {
    out << "        (no frames)\n";
  }
  for (const Frame& f : frames) {
    out << "        " << frame_line(f) << '\n';
  }
}

void write_summary(const Capture& c, const Profile& p, std::ostream& out) {
  out << "profctl heap profile: pid " << c.target.pid << " (" << c.target.exe << "), start "
      << (c.window.start.empty() ? "unknown" : c.window.start) << ", duration "
      << format_value(static_cast<int64_t>(c.window.duration_s * 1e9), "nanoseconds") << '\n';
  const std::string partial = partial_line("heap", p);
  if (!partial.empty()) {
    out << partial << '\n';
  }
  if (p.period <= 1) {
    out << (partial.empty() ? "sampling: every allocation is recorded (--mem-rate 1)\n"
                            : "sampling: every allocation is sampled (--mem-rate 1), but not "
                              "every record reached the profile (partial, above)\n");
  } else {
    out << "sampling: one allocation per " << bytes(p.period)
        << " allocated, on average (--mem-rate " << p.period << ")\n";
  }
  out << "the \"N: B [N: B] @\" records count sampled allocations and their bytes, unscaled: in\n"
         "use at the end [allocated during the capture], as Go's debug=1 heap profile does\n"
         "(heap/N after the header is twice the rate, as Go writes it). The totals and stacks\n"
         "in these comments are scaled to estimate the whole program, as in heap.pb.gz.\n";
  const bool all_raw = std::all_of(p.samples.begin(), p.samples.end(),
                                   [](const Sample& s) { return !s.raw_values.empty(); });
  if (!all_raw) {
    out << "(this capture has no raw values for some stacks: their records show scaled values, "
           "which pprof would scale again)\n";
  }
  std::vector<int64_t> totals(p.sample_types.size(), 0);
  for (const Sample& s : p.samples) {
    for (size_t i = 0; i < totals.size() && i < s.values.size(); ++i) {
      totals[i] = sat_add(totals[i], s.values[i]);
    }
  }
  out << (partial.empty() ? "total:" : "total (lower bounds):");
  for (size_t i = 0; i < p.sample_types.size(); ++i) {
    out << (i == 0 ? " " : ", ") << p.sample_types[i].type << ' '
        << format_value(totals[i], p.sample_types[i].unit);
  }
  out << " (" << p.samples.size() << (p.samples.size() == 1 ? " stack)\n" : " stacks)\n");

  const CaptureHeap* h = p.heap ? &*p.heap : nullptr;
  if (h != nullptr) {
    out << "sampled: " << count(counter(h, "sampled_allocs"), "allocation") << ", "
        << count(counter(h, "sampled_frees"), "free") << ", " << counter(h, "live_at_end")
        << " still live at the end\n";
    out << "not charged: " << count(counter(h, "unknown_frees"), "free")
        << " of pointers profctl did not know (allocated before the attach, or not sampled)\n";
    if (uint64_t n = counter(h, "missed_frees")) {
      out << "missed: " << n
          << " frees were lost (their addresses were allocated again); charged late\n";
    }
    if (uint64_t n = counter(h, "frees_dropped")) {
      out << "frees lost: " << n << " free records were lost: an allocation whose free was "
          << "lost stays counted in use\n";
    }
    if (uint64_t n = counter(h, "table_dropped")) {
      out << "untracked: " << n
          << " sampled allocations did not fit the target's pointer table (their frees are "
             "not seen)\n";
    }
  }
  // The one account of what was lost (the capture's warning for it says the same: not again).
  if (std::string lost = loss_account("heap", p); !lost.empty()) {
    out << lost << '\n';
  }
  out << "note: memory allocated before the attach is unknown to this profile; its frees are "
         "not charged\n";
  const std::string own_warning = loss_warning("heap", p);
  for (const std::string& w : c.warnings) {
    if (w != own_warning) {
      out << "warning: " << w << '\n';
    }
  }
}

void write_top(const Profile& p, size_t main, size_t top_n, std::ostream& out) {
  std::vector<const Sample*> order;
  int64_t total = 0;
  for (const Sample& s : p.samples) {
    order.push_back(&s);
    total = sat_add(total, at(s.values, main));
  }
  std::stable_sort(order.begin(), order.end(), [main](const Sample* a, const Sample* b) {
    return at(a->values, main) > at(b->values, main);
  });
  const SampleType& st = p.sample_types[main];
  out << "\ntop " << std::min(top_n, order.size()) << " of " << order.size() << " stacks by "
      << st.type << ":\n";
  for (size_t r = 0; r < order.size() && r < top_n; ++r) {
    const Sample& s = *order[r];
    out << "\n  #" << r + 1 << "  " << st.type << ' ' << format_value(at(s.values, main), st.unit)
        << " (" << percent(at(s.values, main), total) << ')';
    for (size_t i = 0; i < p.sample_types.size(); ++i) {
      if (i != main) {
        out << ", " << p.sample_types[i].type << ' '
            << format_value(at(s.values, i), p.sample_types[i].unit);
      }
    }
    out << '\n';
    write_frames(out, s.frames);
  }
  std::vector<RankedStack> ranked;
  for (const Sample* s : order) {
    ranked.push_back({&s->frames, at(s->values, main)});
  }
  write_top_functions(ranked, st, total, top_n, out);
}

std::string sampled(const CaptureHeapStack& s) {
  return "sampled " + std::to_string(s.raw_objects) + ": " + bytes(s.raw_bytes);
}

void write_stacks(const CaptureHeapSet& set, size_t top_n, bool ages, std::ostream& out) {
  for (size_t r = 0; r < set.stacks.size() && r < top_n; ++r) {
    const CaptureHeapStack& s = set.stacks[r];
    out << "\n  #" << r + 1 << "  " << bytes(s.bytes) << " (" << percent(s.bytes, set.bytes)
        << "), " << count(s.objects, "object") << " (" << sampled(s) << ')';
    if (ages && s.oldest_age_ns) {
      out << ", oldest " << duration(*s.oldest_age_ns);
      if (s.oldest_tid) {
        out << " (thread " << *s.oldest_tid << ')';
      }
    }
    out << '\n';
    write_frames(out, s.frames);
  }
  if (set.stacks.size() > top_n) {
    out << "\n  ... " << set.stacks.size() - top_n << " more stacks\n";
  }
}

void write_peak_and_leaks(const CaptureHeap& h, size_t top_n, std::ostream& out) {
  out << "\npeak in use: " << bytes(h.peak.bytes) << ", " << count(h.peak.objects, "object")
      << " (sampled " << h.peak.raw_objects << ": " << bytes(h.peak.raw_bytes) << ") at +"
      << duration(h.peak_at_ns) << ", in " << h.peak.stacks.size()
      << (h.peak.stacks.size() == 1 ? " stack" : " stacks") << '\n';
  write_stacks(h.peak, top_n, false, out);

  if (h.leaks.stacks.empty()) {
    out << "\nlong-lived: no allocation still live at the end is older than "
        << duration(h.leak_min_age_ns) << '\n';
    return;
  }
  out << "\nlong-lived (still live at the end and older than " << duration(h.leak_min_age_ns)
      << "): " << bytes(h.leaks.bytes) << ", " << count(h.leaks.objects, "object") << " (sampled "
      << h.leaks.raw_objects << ": " << bytes(h.leaks.raw_bytes) << "), in "
      << h.leaks.stacks.size() << (h.leaks.stacks.size() == 1 ? " stack" : " stacks") << '\n';
  write_stacks(h.leaks, top_n, true, out);
}

// One record as Go's debug=1 writes it: "N: B [N: B] @ pcs", then a "#\tpc\tfunction\tfile:line"
// line per frame (inlined calls included, as runtime.CallersFrames expands them).
void write_record(const Sample& s, const GoTypes& t, std::ostream& out) {
  const std::vector<int64_t>& raw = raw_of(s);
  out << at(raw, t.inuse_objects) << ": " << at(raw, t.inuse_space) << " ["
      << at(raw, t.alloc_objects) << ": " << at(raw, t.alloc_space) << "] @";
  // pprof looks every record address up at address - 1, as Go's are return addresses; the
  // innermost frame here is the allocator's entry itself (the probe's pc), so it is written
  // one past it.
  bool innermost = true;
  for (const Frame& f : s.frames) {
    if (!f.inlined) {
      out << ' ' << report_detail::hex(innermost ? f.pc + 1 : f.pc);
      innermost = false;
    }
  }
  out << '\n';
  for (const Frame& f : s.frames) {
    out << "#\t" << report_detail::hex(f.pc) << '\t' << frame_name(f);
    if (f.function && f.file) {
      out << '\t' << *f.file << ':' << f.line.value_or(0);
    }
    out << '\n';
  }
  out << '\n';
}

// The modules' executable segments in the memory map section pprof's legacy parser reads
// after the records ("start-limit perm path (@offset) build-id"), as in Go's legacy
// profiles: with it pprof charges each address to its module ("[libc.so.6]", not
// "<unknown>"), and names it from the binary where it can read one (google/pprof with
// binutils does for any module; `go tool pprof` only for a non-PIE main program). A path
// with a space cannot be written in that form and is left out, as are modules whose
// segments are unknown (a capture from before they were recorded, a data file).
void write_memory_map(const Capture& c, std::ostream& out) {
  out << "--- Memory map: ---\n";
  auto line = [&out](const CaptureModule& m, uint64_t start, uint64_t limit, uint64_t offset) {
    out << report_detail::hex(start) << '-' << report_detail::hex(limit) << " r-xp " << m.path
        << " (@" << std::hex << offset << std::dec << ')';
    if (!m.build_id.empty() && std::all_of(m.build_id.begin(), m.build_id.end(), [](char ch) {
          return std::isxdigit(static_cast<unsigned char>(ch)) != 0;
        })) {
      out << ' ' << m.build_id;
    }
    out << '\n';
  };
  for (const CaptureModule& m : c.modules) {
    const bool writable =
        !m.path.empty() && std::none_of(m.path.begin(), m.path.end(), [](char ch) {
          return std::isspace(static_cast<unsigned char>(ch)) != 0;
        });
    if (!writable) {
      continue;
    }
    for (const CaptureSegment& seg : m.exec_segments) {
      line(m, seg.start, seg.limit, seg.file_offset);
    }
  }
}

}  // namespace

void write_heap_text(const Capture& c, std::ostream& out, const HeapTextOptions& opts) {
  auto it = c.profiles.find("heap");
  if (it == c.profiles.end()) {
    out << "profctl: no heap profile in this capture\n";
    return;
  }
  const Profile& p = it->second;
  const GoTypes t(p);

  // Go's header: totals of the raw records; the rate doubled as pprof expects "heap/".
  int64_t inuse_objects = 0, inuse_bytes = 0, alloc_objects = 0, alloc_bytes = 0;
  for (const Sample& s : p.samples) {
    const std::vector<int64_t>& raw = raw_of(s);
    inuse_objects = sat_add(inuse_objects, at(raw, t.inuse_objects));
    inuse_bytes = sat_add(inuse_bytes, at(raw, t.inuse_space));
    alloc_objects = sat_add(alloc_objects, at(raw, t.alloc_objects));
    alloc_bytes = sat_add(alloc_bytes, at(raw, t.alloc_space));
  }
  out << "heap profile: " << inuse_objects << ": " << inuse_bytes << " [" << alloc_objects << ": "
      << alloc_bytes << "] @ heap/" << sat_add(p.period, p.period) << '\n';

  std::ostringstream summary;
  write_summary(c, p, summary);
  if (!p.sample_types.empty()) {
    const size_t main = find_sample_type(p, opts.sample_index)
                            .value_or(find_sample_type(p, "").value_or(p.sample_types.size() - 1));
    write_top(p, main, opts.top_n, summary);
  }
  if (p.heap) {
    write_peak_and_leaks(*p.heap, opts.top_n, summary);
  }
  if (opts.records) {
    summary << "\nrecords (Go's debug=1 format, most bytes in use first; pprof reads their "
               "numbers, but names\nfunctions only from the binaries, by module where it cannot: "
               "heap.pb.gz has every name):\n";
  }
  comment(out, summary.str());
  if (!opts.records) {
    return;
  }
  out << '\n';
  std::vector<const Sample*> order;
  for (const Sample& s : p.samples) {
    order.push_back(&s);
  }
  // Go sorts its records by in-use bytes, largest first.
  std::stable_sort(order.begin(), order.end(), [&t](const Sample* a, const Sample* b) {
    return at(raw_of(*a), t.inuse_space) > at(raw_of(*b), t.inuse_space);
  });
  for (const Sample* s : order) {
    write_record(*s, t, out);
  }
  write_memory_map(c, out);
}

}  // namespace profctl
