// SPDX-License-Identifier: MIT
#include "report/pprof_writer.h"

#include <zlib.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <ctime>
#include <map>
#include <optional>
#include <unordered_map>

#include "report/profile.pb.h"
#include "report/profile_loss.h"
#include "report/units.h"

namespace profctl {
namespace {

namespace pb = perftools::profiles;

// RFC 3339 ("2026-11-24T10:00:00Z", "2026-11-24T10:00:00.250+01:00") -> ns since the epoch.
std::optional<int64_t> parse_rfc3339_ns(const std::string& s) {
  int year, mon, day, hour, min, sec, used = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &year, &mon, &day, &hour, &min,
                  &sec, &used) != 6 ||
      used == 0) {
    return std::nullopt;
  }
  size_t i = static_cast<size_t>(used);
  int64_t frac_ns = 0;
  if (i < s.size() && s[i] == '.') {
    int64_t scale = 100'000'000;
    for (++i; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, scale /= 10) {
      frac_ns += (s[i] - '0') * scale;
    }
  }
  int64_t offset_s = 0;
  if (i < s.size() && (s[i] == 'Z' || s[i] == 'z')) {
    ++i;
  } else if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh, om;
    if (std::sscanf(s.c_str() + i + 1, "%2d:%2d", &oh, &om) != 2) {
      return std::nullopt;
    }
    offset_s = (s[i] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    i += 6;
  } else {
    return std::nullopt;
  }
  if (i != s.size()) {
    return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  const time_t t = timegm(&tm);
  // Years past 2262 do not fit in int64 nanoseconds: no timestamp rather than an overflow.
  int64_t ns = 0;
  if (t == static_cast<time_t>(-1) ||
      __builtin_mul_overflow(static_cast<int64_t>(t) - offset_s, int64_t{1'000'000'000}, &ns) ||
      __builtin_add_overflow(ns, frac_ns, &ns)) {
    return std::nullopt;
  }
  return ns;
}

std::optional<int64_t> parse_int(const std::string& s) {
  int64_t v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || s.empty()) {
    return std::nullopt;
  }
  return v;
}

class ProfileBuilder {
 public:
  ProfileBuilder(const Capture& c, const std::string& kind, const Profile& p)
      : capture_(c), kind_(kind), profile_(p) {
    str("");  // string_table[0] must be ""
  }

  pb::Profile build() {
    for (const SampleType& st : profile_.sample_types) {
      set_value_type(out_.add_sample_type(), st);
    }
    add_mappings();
    for (const Sample& s : profile_.samples) {
      add_sample(s);
    }
    finish_mappings();
    if (profile_.period_type) {
      set_value_type(out_.mutable_period_type(), *profile_.period_type);
    }
    out_.set_period(profile_.period);
    if (profile_.default_sample_type) {
      out_.set_default_sample_type(str(*profile_.default_sample_type));
    }
    if (auto t = parse_rfc3339_ns(capture_.window.start)) {
      out_.set_time_nanos(*t);
    }
    out_.set_duration_nanos(report_detail::seconds_to_ns(capture_.window.duration_s));
    // What was lost, first: pprof prints the comments above every view.
    if (std::string partial = partial_line(kind_, profile_); !partial.empty()) {
      out_.add_comment(str("profctl: " + partial));
      out_.add_comment(str("profctl: " + loss_account(kind_, profile_)));
    }
    if (profile_.heap) {
      add_heap_comments(*profile_.heap);
    }
    if (profile_.detail_omitted != 0) {
      out_.add_comment(str("profctl: " + std::to_string(profile_.detail_omitted) +
                           " events are counted per stack without labels (detail cap)"));
    }
    const std::string own_warning = loss_warning(kind_, profile_);  // said above: not again
    for (const std::string& w : capture_.warnings) {
      if (w != own_warning) {
        out_.add_comment(str("profctl: " + w));
      }
    }
    return std::move(out_);
  }

 private:
  struct MappingInfo {
    uint64_t start, limit, id;
    // What every location in the mapping carries (Mapping.has_*): pprof re-symbolizes a
    // mapping from the file on disk unless it is told that nothing is missing.
    // Every location has functions (see location_id), so has_functions needs only one.
    bool all_files = true, all_lines = true, any_location = false;
  };

  // What pprof's views cannot show of a heap profile: what was not charged, and the peak.
  void add_heap_comments(const CaptureHeap& h) {
    auto counter = [&h](const char* name) {
      auto it = h.counters.find(name);
      return it == h.counters.end() ? uint64_t{0} : it->second;
    };
    out_.add_comment(str("profctl: memory allocated before the attach is not in this profile; " +
                         std::to_string(counter("unknown_frees")) +
                         " frees of pointers it does not know (allocated before the attach, or "
                         "not sampled) were not charged"));
    char at[48];
    std::snprintf(at, sizeof at, "%.3f", static_cast<double>(h.peak_at_ns) / 1e9);
    out_.add_comment(str("profctl: peak in use " + std::to_string(h.peak.bytes) + " bytes (" +
                         std::to_string(h.peak.objects) + " objects, scaled) at +" + at +
                         "s; see heap.txt or capture.json for its stacks"));
  }

  int64_t str(const std::string& s) {
    auto [it, added] = strings_.try_emplace(s, static_cast<int64_t>(strings_.size()));
    if (added) {
      out_.add_string_table(s);
    }
    return it->second;
  }

  void set_value_type(pb::ValueType* vt, const SampleType& st) {
    vt->set_type(str(st.type));
    vt->set_unit(str(st.unit));
  }

  void add_mapping(const CaptureModule& m, uint64_t start, uint64_t limit, uint64_t offset) {
    pb::Mapping* pm = out_.add_mapping();
    pm->set_id(static_cast<uint64_t>(out_.mapping_size()));
    pm->set_memory_start(start);
    pm->set_memory_limit(limit);
    pm->set_file_offset(offset);
    pm->set_filename(str(m.path));
    pm->set_build_id(str(m.build_id));
    mappings_.push_back(MappingInfo{start, limit, pm->id()});
  }

  // One Mapping per executable segment, with the segment's own start, limit and file offset:
  // a reader that symbolizes from the file (pprof does, for any mapping whose has_functions
  // is false, or with -symbolize=force) computes a pc's file offset as
  // pc - memory_start + file_offset, and from it the ELF address. A mapping that began at the
  // module's first (read-only) segment with offset 0 sent it 0xf5000 bytes astray in
  // libpython. Captures without segments get one mapping for the whole module.
  void add_mappings() {
    std::vector<const CaptureModule*> order;
    for (const CaptureModule& m : capture_.modules) {
      order.push_back(&m);
    }
    // pprof takes the first mapping for the main binary.
    std::stable_partition(order.begin(), order.end(), [this](const CaptureModule* m) {
      return m->path == capture_.target.exe;
    });
    for (const CaptureModule* m : order) {
      if (m->exec_segments.empty()) {
        add_mapping(*m, m->start, m->limit, m->file_offset);
      }
      for (const CaptureSegment& seg : m->exec_segments) {
        add_mapping(*m, seg.start, seg.limit, seg.file_offset);
      }
    }
    std::sort(mappings_.begin(), mappings_.end(),
              [](const MappingInfo& a, const MappingInfo& b) { return a.start < b.start; });
  }

  MappingInfo* mapping_for(uint64_t pc) {
    auto it = std::upper_bound(mappings_.begin(), mappings_.end(), pc,
                               [](uint64_t v, const MappingInfo& m) { return v < m.start; });
    if (it == mappings_.begin()) {
      return nullptr;
    }
    --it;
    return pc < it->limit ? &*it : nullptr;
  }

  // has_functions & co promise pprof that nothing is left to symbolize in the mapping, so
  // each is set exactly when every location in it carries that piece. Inline frames can only
  // be known where there is DWARF (file and line), and only when they were expanded.
  void finish_mappings() {
    auto opt = capture_.options.find("inline");
    const bool inlines_expanded = opt == capture_.options.end() || opt->second != "false";
    for (const MappingInfo& mi : mappings_) {
      pb::Mapping* pm = out_.mutable_mapping(static_cast<int>(mi.id - 1));
      const bool functions = mi.any_location;
      pm->set_has_functions(functions);
      pm->set_has_filenames(functions && mi.all_files);
      pm->set_has_line_numbers(functions && mi.all_lines);
      pm->set_has_inline_frames(functions && mi.all_files && mi.all_lines && inlines_expanded);
    }
  }

  uint64_t function_id(const std::string& name, const std::optional<std::string>& file) {
    auto key = std::make_pair(name, file.value_or(""));
    auto it = functions_.find(key);
    if (it != functions_.end()) {
      return it->second;
    }
    pb::Function* fn = out_.add_function();
    fn->set_id(static_cast<uint64_t>(out_.function_size()));
    fn->set_name(str(name));
    fn->set_system_name(str(name));
    fn->set_filename(str(key.second));
    functions_.emplace(std::move(key), fn->id());
    return fn->id();
  }

  // frames[first..last] share one pc: inlined calls, then the real frame they sit in.
  uint64_t location_id(const std::vector<Frame>& frames, size_t first, size_t last) {
    const Frame& real = frames[last];
    auto key = std::make_pair(real.pc, real.module);
    auto it = locations_.find(key);
    if (it != locations_.end()) {
      return it->second;
    }
    pb::Location* loc = out_.add_location();
    loc->set_id(static_cast<uint64_t>(out_.location_size()));
    loc->set_address(real.pc);
    MappingInfo* mi = mapping_for(real.pc);
    if (mi != nullptr) {
      loc->set_mapping_id(mi->id);
      mi->any_location = true;
    }
    for (size_t i = first; i <= last; ++i) {
      // Every frame gets a Line named as profctl's own reports name it: an unnamed function
      // is "libfoo.so+0x15ae0" (its CFI start), which pprof groups like any function, rather
      // than no Line, which would make pprof symbolize the whole mapping again by itself.
      const Frame& f = frames[i];
      const std::string name = report_detail::frame_name(f);
      if (mi != nullptr) {
        mi->all_files = mi->all_files && f.file.has_value();
        mi->all_lines = mi->all_lines && f.line.has_value();
      }
      pb::Line* line = loc->add_line();
      line->set_function_id(function_id(name, f.file));
      line->set_line(f.line.value_or(0));
    }
    locations_.emplace(std::move(key), loc->id());
    return loc->id();
  }

  void add_sample(const Sample& s) {
    pb::Sample* ps = out_.add_sample();
    // pprof rejects a sample whose value count differs from the sample types'.
    for (size_t i = 0; i < profile_.sample_types.size(); ++i) {
      ps->add_value(i < s.values.size() ? s.values[i] : 0);
    }
    const std::vector<Frame>& frames = s.frames;
    for (size_t first = 0; first < frames.size();) {
      size_t last = first;
      while (frames[last].inlined && last + 1 < frames.size() &&
             frames[last + 1].pc == frames[first].pc) {
        ++last;
      }
      ps->add_location_id(location_id(frames, first, last));
      first = last + 1;
    }
    for (const auto& [key, value] : s.labels) {
      pb::Label* label = ps->add_label();
      label->set_key(str(key));
      std::optional<int64_t> num = key == "tid" ? parse_int(value) : std::nullopt;
      if (num) {
        label->set_num(*num);
      } else {
        label->set_str(str(value));
      }
    }
  }

  const Capture& capture_;
  const std::string& kind_;
  const Profile& profile_;
  pb::Profile out_;
  std::unordered_map<std::string, int64_t> strings_;
  std::vector<MappingInfo> mappings_;  // sorted by start
  std::map<std::pair<std::string, std::string>, uint64_t> functions_;
  std::map<std::pair<uint64_t, std::string>, uint64_t> locations_;
};

// gzip (not raw deflate, not zlib): windowBits 15 + 16 asks zlib for the gzip wrapper.
Result<std::string> gzip(const std::string& in) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) !=
      Z_OK) {
    return Error{"gzip: deflateInit2 failed"};
  }
  std::string out(deflateBound(&zs, in.size()), '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  const int rc = deflate(&zs, Z_FINISH);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) {
    return Error{"gzip: deflate failed"};
  }
  return out;
}

}  // namespace

Result<void> write_pprof(const Capture& c, const std::string& kind, std::ostream& out) {
  auto it = c.profiles.find(kind);
  if (it == c.profiles.end()) {
    return Error{"no " + kind + " profile in the capture"};
  }
  pb::Profile profile = ProfileBuilder(c, kind, it->second).build();
  std::string bytes;
  if (!profile.SerializeToString(&bytes)) {
    return Error{"pprof: cannot serialize the " + kind + " profile"};
  }
  Result<std::string> packed = gzip(bytes);
  if (!packed) {
    return packed.error();
  }
  out.write(packed->data(), static_cast<std::streamsize>(packed->size()));
  if (!out) {
    return Error{"pprof: cannot write the " + kind + " profile"};
  }
  return {};
}

}  // namespace profctl
