// SPDX-License-Identifier: MIT
#include "report/json_reader.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <exception>
#include <iterator>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

namespace profctl {
namespace {

using Json = nlohmann::json;

// Thrown by the field readers below and caught in read_capture_json only, which turns it
// into an Error: the path to the bad field is known where the problem is found, and the
// callers stay a flat list of fields instead of a check after every line.
struct FieldError {
  std::string path;
  std::string why;
};

std::string child(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}

std::string index(const std::string& path, size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

[[noreturn]] void wrong_type(const Json& j, const std::string& path, const char* expected) {
  throw FieldError{path, std::string("expected ") + expected + ", got " + j.type_name()};
}

const Json& need(const Json& obj, std::string_view key, const std::string& path) {
  auto it = obj.find(key);
  if (it == obj.end()) {
    throw FieldError{child(path, key), "missing"};
  }
  return *it;
}

const Json* maybe(const Json& obj, std::string_view key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

const Json& object(const Json& j, const std::string& path) {
  if (!j.is_object()) {
    wrong_type(j, path, "an object");
  }
  return j;
}

const Json& array(const Json& j, const std::string& path) {
  if (!j.is_array()) {
    wrong_type(j, path, "an array");
  }
  return j;
}

std::string string(const Json& j, const std::string& path) {
  if (!j.is_string()) {
    wrong_type(j, path, "a string");
  }
  return j.get<std::string>();
}

bool boolean(const Json& j, const std::string& path) {
  if (!j.is_boolean()) {
    wrong_type(j, path, "a boolean");
  }
  return j.get<bool>();
}

double number(const Json& j, const std::string& path) {
  if (!j.is_number()) {
    wrong_type(j, path, "a number");
  }
  return j.get<double>();
}

// An integer in [lo, hi]; nlohmann keeps integers above INT64_MAX as unsigned.
template <class T>
T integer(const Json& j, const std::string& path) {
  if (!j.is_number_integer()) {
    wrong_type(j, path, "an integer");
  }
  bool in_range;
  if (j.is_number_unsigned()) {
    in_range = j.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max());
  } else {
    const int64_t v = j.get<int64_t>();
    in_range =
        v >= static_cast<int64_t>(std::numeric_limits<T>::min()) &&
        (v < 0 || static_cast<uint64_t>(v) <= static_cast<uint64_t>(std::numeric_limits<T>::max()));
  }
  if (!in_range) {
    throw FieldError{path, "integer out of range"};
  }
  return j.get<T>();
}

// A finite number of seconds in [0, kMaxSeconds]: a capture longer than ~31 years is not one.
double seconds(const Json& j, const std::string& path) {
  constexpr double kMaxSeconds = 1e9;
  const double v = number(j, path);
  if (!(v >= 0 && v <= kMaxSeconds)) {
    throw FieldError{path, "out of range (" + j.dump() + "; must be 0 to 1e9 seconds)"};
  }
  return v;
}

// "0x1f": the form write_capture_json gives addresses and offsets.
uint64_t hex(const Json& j, const std::string& path) {
  if (!j.is_string()) {
    wrong_type(j, path, "a hex string (\"0x...\")");
  }
  const std::string& s = j.get_ref<const std::string&>();
  uint64_t v = 0;
  if (s.size() < 3 || s.size() > 18 || s[0] != '0' || s[1] != 'x') {
    throw FieldError{path, "expected a hex string (\"0x...\"), got \"" + s + "\""};
  }
  auto [end, ec] = std::from_chars(s.data() + 2, s.data() + s.size(), v, 16);
  if (ec != std::errc() || end != s.data() + s.size()) {
    throw FieldError{path, "expected a hex string (\"0x...\"), got \"" + s + "\""};
  }
  return v;
}

std::vector<std::string> strings(const Json& j, const std::string& path) {
  std::vector<std::string> out;
  for (size_t i = 0; i < array(j, path).size(); ++i) {
    out.push_back(string(j[i], index(path, i)));
  }
  return out;
}

std::map<std::string, std::string> string_map(const Json& j, const std::string& path) {
  std::map<std::string, std::string> out;
  for (const auto& [k, v] : object(j, path).items()) {
    out[k] = string(v, child(path, k));
  }
  return out;
}

Frame read_frame(const Json& j, const std::string& path) {
  object(j, path);
  Frame f;
  f.pc = hex(need(j, "pc", path), child(path, "pc"));
  const Json& fn = need(j, "function", path);
  if (!fn.is_null()) {
    f.function = string(fn, child(path, "function"));
  }
  f.module = string(need(j, "module", path), child(path, "module"));
  f.offset = hex(need(j, "offset", path), child(path, "offset"));
  const Json& file = need(j, "file", path);
  if (!file.is_null()) {
    f.file = string(file, child(path, "file"));
  }
  const Json& line = need(j, "line", path);
  if (!line.is_null()) {
    f.line = integer<int>(line, child(path, "line"));
  }
  f.inlined = boolean(need(j, "inlined", path), child(path, "inlined"));
  if (const Json* v = maybe(j, "function_start")) {
    f.function_start = hex(*v, child(path, "function_start"));
  }
  return f;
}

std::vector<Frame> read_frames(const Json& j, const std::string& path) {
  std::vector<Frame> out;
  for (size_t i = 0; i < array(j, path).size(); ++i) {
    out.push_back(read_frame(j[i], index(path, i)));
  }
  return out;
}

PauseStats read_pause(const Json& j, const std::string& path) {
  object(j, path);
  PauseStats p;
  p.world_stopped_ns =
      integer<uint64_t>(need(j, "world_stopped_ns", path), child(path, "world_stopped_ns"));
  p.stop_ns = integer<uint64_t>(need(j, "stop_ns", path), child(path, "stop_ns"));
  p.capture_ns = integer<uint64_t>(need(j, "capture_ns", path), child(path, "capture_ns"));
  p.resume_ns = integer<uint64_t>(need(j, "resume_ns", path), child(path, "resume_ns"));
  p.threads = integer<size_t>(need(j, "threads", path), child(path, "threads"));
  p.stack_bytes = integer<uint64_t>(need(j, "stack_bytes", path), child(path, "stack_bytes"));
  if (const Json* v = maybe(j, "median_ns")) {
    p.median_ns = integer<uint64_t>(*v, child(path, "median_ns"));
  }
  if (const Json* v = maybe(j, "worst_ns")) {
    p.worst_ns = integer<uint64_t>(*v, child(path, "worst_ns"));
  }
  if (const Json* v = maybe(j, "samples")) {
    p.samples = integer<uint64_t>(*v, child(path, "samples"));
  }
  return p;
}

CaptureThread read_thread(const Json& j, const std::string& path) {
  object(j, path);
  CaptureThread t;
  t.tid = integer<pid_t>(need(j, "tid", path), child(path, "tid"));
  t.name = string(need(j, "name", path), child(path, "name"));
  t.state = string(need(j, "state", path), child(path, "state"));
  if (const Json* v = maybe(j, "wait_syscall")) {
    t.wait_syscall = string(*v, child(path, "wait_syscall"));
  }
  if (const Json* v = maybe(j, "wait_address")) {
    t.wait_address = hex(*v, child(path, "wait_address"));
  }
  if (const Json* v = maybe(j, "waiting_in")) {
    t.waiting_in = string(*v, child(path, "waiting_in"));
  }
  if (const Json* v = maybe(j, "waiting_ns")) {
    t.waiting_ns = integer<uint64_t>(*v, child(path, "waiting_ns"));
  }
  if (const Json* v = maybe(j, "cpu_ns")) {
    t.cpu_ns = integer<uint64_t>(*v, child(path, "cpu_ns"));
  }
  if (const Json* v = maybe(j, "truncated")) {
    t.truncated = boolean(*v, child(path, "truncated"));
  }
  if (const Json* v = maybe(j, "truncated_reason")) {
    t.truncated_reason = string(*v, child(path, "truncated_reason"));
  }
  t.frames = read_frames(need(j, "frames", path), child(path, "frames"));
  return t;
}

SampleType read_value_type(const Json& j, const std::string& path) {
  object(j, path);
  return SampleType{string(need(j, "type", path), child(path, "type")),
                    string(need(j, "unit", path), child(path, "unit"))};
}

Sample read_sample(const Json& j, const std::string& path) {
  object(j, path);
  Sample s;
  const std::string values_path = child(path, "values");
  const Json& values = array(need(j, "values", path), values_path);
  for (size_t i = 0; i < values.size(); ++i) {
    // Any int64, negative too (pprof allows them, e.g. in a difference of two profiles):
    // the writers saturate their sums rather than trust them to fit.
    s.values.push_back(integer<int64_t>(values[i], index(values_path, i)));
  }
  if (const Json* v = maybe(j, "raw_values")) {
    const std::string raw_path = child(path, "raw_values");
    for (size_t i = 0; i < array(*v, raw_path).size(); ++i) {
      s.raw_values.push_back(integer<int64_t>((*v)[i], index(raw_path, i)));
    }
  }
  s.frames = read_frames(need(j, "frames", path), child(path, "frames"));
  if (const Json* v = maybe(j, "labels")) {
    s.labels = string_map(*v, child(path, "labels"));
  }
  return s;
}

CaptureHeapStack read_heap_stack(const Json& j, const std::string& path) {
  object(j, path);
  CaptureHeapStack s;
  s.objects = integer<int64_t>(need(j, "objects", path), child(path, "objects"));
  s.bytes = integer<int64_t>(need(j, "bytes", path), child(path, "bytes"));
  s.raw_objects = integer<int64_t>(need(j, "raw_objects", path), child(path, "raw_objects"));
  s.raw_bytes = integer<int64_t>(need(j, "raw_bytes", path), child(path, "raw_bytes"));
  if (const Json* v = maybe(j, "oldest_age_ns")) {
    s.oldest_age_ns = integer<uint64_t>(*v, child(path, "oldest_age_ns"));
  }
  if (const Json* v = maybe(j, "oldest_tid")) {
    s.oldest_tid = integer<pid_t>(*v, child(path, "oldest_tid"));
  }
  s.frames = read_frames(need(j, "frames", path), child(path, "frames"));
  return s;
}

// The peak or long-lived section; `when` names its time field (at_ns, min_age_ns).
CaptureHeapSet read_heap_set(const Json& j, const std::string& path, const char* when,
                             uint64_t& when_value) {
  object(j, path);
  CaptureHeapSet set;
  when_value = integer<uint64_t>(need(j, when, path), child(path, when));
  set.objects = integer<int64_t>(need(j, "objects", path), child(path, "objects"));
  set.bytes = integer<int64_t>(need(j, "bytes", path), child(path, "bytes"));
  set.raw_objects = integer<int64_t>(need(j, "raw_objects", path), child(path, "raw_objects"));
  set.raw_bytes = integer<int64_t>(need(j, "raw_bytes", path), child(path, "raw_bytes"));
  const std::string stacks_path = child(path, "stacks");
  const Json& stacks = array(need(j, "stacks", path), stacks_path);
  for (size_t i = 0; i < stacks.size(); ++i) {
    set.stacks.push_back(read_heap_stack(stacks[i], index(stacks_path, i)));
  }
  return set;
}

// counters, peak and leaks: present (all three, as profctl writes them) in a heap profile.
std::optional<CaptureHeap> read_heap(const Json& j, const std::string& path) {
  const Json* counters = maybe(j, "counters");
  const Json* peak = maybe(j, "peak");
  const Json* leaks = maybe(j, "leaks");
  if (counters == nullptr && peak == nullptr && leaks == nullptr) {
    return std::nullopt;
  }
  CaptureHeap h;
  if (counters != nullptr) {
    const std::string counters_path = child(path, "counters");
    for (const auto& [k, v] : object(*counters, counters_path).items()) {
      h.counters[k] = integer<uint64_t>(v, child(counters_path, k));
    }
  }
  if (peak != nullptr) {
    h.peak = read_heap_set(*peak, child(path, "peak"), "at_ns", h.peak_at_ns);
  }
  if (leaks != nullptr) {
    h.leaks = read_heap_set(*leaks, child(path, "leaks"), "min_age_ns", h.leak_min_age_ns);
  }
  return h;
}

// The profile's loss, when the capture has one: its `dropped` must be the loss's sum (a
// report that printed one and not the other would contradict itself).
std::optional<ProfileLoss> read_loss(const Json& j, const std::string& path, bool has_dropped,
                                     uint64_t dropped) {
  const Json* v = maybe(j, "loss");
  if (v == nullptr) {
    return std::nullopt;
  }
  const std::string where = child(path, "loss");
  object(*v, where);
  ProfileLoss l;
  auto count = [&](const char* key, uint64_t& out) {
    if (const Json* f = maybe(*v, key)) {
      out = integer<uint64_t>(*f, child(where, key));
    }
  };
  count("recorded", l.recorded);
  count("ring_dropped", l.ring_dropped);
  count("queue_dropped", l.queue_dropped);
  count("capped", l.capped);
  if (has_dropped && dropped != l.lost()) {
    throw FieldError{child(path, "dropped"), std::to_string(dropped) +
                                                 " disagrees with the loss it sums (" +
                                                 std::to_string(l.lost()) + ")"};
  }
  return l;
}

Profile read_profile(const Json& j, const std::string& path) {
  object(j, path);
  Profile p;
  const std::string types_path = child(path, "sample_types");
  const Json& types = array(need(j, "sample_types", path), types_path);
  for (size_t i = 0; i < types.size(); ++i) {
    p.sample_types.push_back(read_value_type(types[i], index(types_path, i)));
  }
  if (const Json* v = maybe(j, "default_sample_type")) {
    const std::string type = string(*v, child(path, "default_sample_type"));
    const bool known = std::any_of(p.sample_types.begin(), p.sample_types.end(),
                                   [&](const SampleType& st) { return st.type == type; });
    if (!known) {
      throw FieldError{child(path, "default_sample_type"),
                       "\"" + type + "\" is not one of the sample types"};
    }
    p.default_sample_type = type;
  }
  if (const Json* v = maybe(j, "period_type")) {
    p.period_type = read_value_type(*v, child(path, "period_type"));
  }
  if (const Json* v = maybe(j, "period")) {
    p.period = integer<int64_t>(*v, child(path, "period"));
  }
  if (const Json* v = maybe(j, "dropped")) {
    p.dropped = integer<uint64_t>(*v, child(path, "dropped"));
  }
  if (const Json* v = maybe(j, "detail_omitted")) {
    p.detail_omitted = integer<uint64_t>(*v, child(path, "detail_omitted"));
  }
  const std::string samples_path = child(path, "samples");
  const Json& samples = array(need(j, "samples", path), samples_path);
  for (size_t i = 0; i < samples.size(); ++i) {
    Sample s = read_sample(samples[i], index(samples_path, i));
    if (s.values.size() != p.sample_types.size()) {
      throw FieldError{index(samples_path, i) + ".values",
                       "has " + std::to_string(s.values.size()) + " values for " +
                           std::to_string(p.sample_types.size()) + " sample types"};
    }
    if (!s.raw_values.empty() && s.raw_values.size() != p.sample_types.size()) {
      throw FieldError{index(samples_path, i) + ".raw_values",
                       "has " + std::to_string(s.raw_values.size()) + " values for " +
                           std::to_string(p.sample_types.size()) + " sample types"};
    }
    p.samples.push_back(std::move(s));
  }
  p.heap = read_heap(j, path);
  p.loss = read_loss(j, path, maybe(j, "dropped") != nullptr, p.dropped);
  if (p.loss) {
    p.dropped = p.loss->lost();
  }
  return p;
}

CaptureModule read_module(const Json& j, const std::string& path) {
  object(j, path);
  CaptureModule m;
  m.path = string(need(j, "path", path), child(path, "path"));
  m.start = hex(need(j, "start", path), child(path, "start"));
  m.limit = hex(need(j, "limit", path), child(path, "limit"));
  m.file_offset = hex(need(j, "file_offset", path), child(path, "file_offset"));
  m.build_id = string(need(j, "build_id", path), child(path, "build_id"));
  if (const Json* v = maybe(j, "exec_segments")) {
    const std::string where = child(path, "exec_segments");
    for (size_t i = 0; i < array(*v, where).size(); ++i) {
      const Json& s = (*v)[i];
      const std::string at = index(where, i);
      object(s, at);
      CaptureSegment seg;
      seg.start = hex(need(s, "start", at), child(at, "start"));
      seg.limit = hex(need(s, "limit", at), child(at, "limit"));
      seg.file_offset = hex(need(s, "file_offset", at), child(at, "file_offset"));
      if (seg.limit <= seg.start) {
        throw FieldError{child(at, "limit"), "not above start"};
      }
      m.exec_segments.push_back(seg);
    }
  }
  return m;
}

Capture read_fields(const Json& j) {
  Capture c;
  c.schema = kCaptureSchema;
  if (const Json* v = maybe(j, "tool_version")) {
    c.tool_version = string(*v, "tool_version");
  }
  const Json& target = object(need(j, "target", ""), "target");
  c.target.pid = integer<pid_t>(need(target, "pid", "target"), "target.pid");
  c.target.exe = string(need(target, "exe", "target"), "target.exe");
  c.target.cmdline = strings(need(target, "cmdline", "target"), "target.cmdline");

  const Json& window = object(need(j, "window", ""), "window");
  c.window.start = string(need(window, "start", "window"), "window.start");
  c.window.duration_s = seconds(need(window, "duration_s", "window"), "window.duration_s");
  if (const Json* v = maybe(window, "requested_hz")) {
    c.window.requested_hz = seconds(*v, "window.requested_hz");
  }
  if (const Json* v = maybe(window, "achieved_hz")) {
    c.window.achieved_hz = seconds(*v, "window.achieved_hz");
  }

  if (const Json* v = maybe(j, "options")) {
    c.options = string_map(*v, "options");
  }
  if (const Json* v = maybe(j, "pause")) {
    c.pause = read_pause(*v, "pause");
  }
  const Json& threads = array(need(j, "threads", ""), "threads");
  for (size_t i = 0; i < threads.size(); ++i) {
    c.threads.push_back(read_thread(threads[i], index("threads", i)));
  }
  for (const auto& [kind, p] : object(need(j, "profiles", ""), "profiles").items()) {
    c.profiles[kind] = read_profile(p, "profiles." + kind);
  }
  if (const Json* v = maybe(j, "modules")) {
    for (size_t i = 0; i < array(*v, "modules").size(); ++i) {
      c.modules.push_back(read_module((*v)[i], index("modules", i)));
    }
  }
  if (const Json* v = maybe(j, "warnings")) {
    c.warnings = strings(*v, "warnings");
  }
  return c;
}

// "an array", "a number": for nlohmann's type_name().
std::string with_article(const char* type) {
  const std::string_view t(type);
  const bool vowel = !t.empty() && std::string_view("aeiou").find(t[0]) != std::string_view::npos;
  return (vowel ? "an " : "a ") + std::string(t);
}

Error not_a_capture(const std::string& why) { return Error{"not a profctl capture: " + why}; }

// "profctl.capture/N" -> ok for N == 1, a clear error otherwise.
Result<void> check_schema(const Json& j) {
  const Json* schema = maybe(j, "schema");
  if (schema == nullptr) {
    return not_a_capture("no \"schema\" field");
  }
  if (!schema->is_string()) {
    return not_a_capture(std::string("\"schema\" is a ") + schema->type_name() + ", expected \"" +
                         kCaptureSchema + "\"");
  }
  const std::string& s = schema->get_ref<const std::string&>();
  static constexpr std::string_view kPrefix = "profctl.capture/";
  int major = 0;
  const char* digits = s.data() + kPrefix.size();
  const char* end = s.data() + s.size();
  if (s.size() <= kPrefix.size() || s.compare(0, kPrefix.size(), kPrefix) != 0 ||
      std::from_chars(digits, end, major).ptr != end || major < 1) {
    return not_a_capture("unknown schema \"" + s + "\", expected \"" + kCaptureSchema + "\"");
  }
  if (major != kCaptureSchemaMajor) {
    return Error{"capture is from a newer profctl (schema " + s + "); this profctl reads " +
                 kCaptureSchema};
  }
  return {};
}

// nlohmann's what() starts with "[json.exception.parse_error.101] "; people need the rest.
std::string without_exception_tag(const char* what) {
  std::string_view w(what);
  if (!w.empty() && w.front() == '[') {
    if (size_t close = w.find("] "); close != std::string_view::npos) {
      w.remove_prefix(close + 2);
    }
  }
  return std::string(w);
}

}  // namespace

Result<Capture> read_capture_json(std::istream& in) {
  try {
    const std::string text(std::istreambuf_iterator<char>(in), {});
    if (in.bad()) {
      return not_a_capture("cannot read the input");
    }
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
      return not_a_capture("empty input");
    }
    Json j;
    try {
      j = Json::parse(text);
    } catch (const Json::parse_error& e) {
      const std::string why = without_exception_tag(e.what());
      if (e.byte >= text.size() && why.find("unexpected end of input") != std::string::npos) {
        return not_a_capture("truncated JSON (" + why + ")");
      }
      return not_a_capture("not JSON (" + why + ")");
    }
    if (!j.is_object()) {
      return not_a_capture("the top level is " + with_article(j.type_name()) + ", not an object");
    }
    if (Result<void> ok = check_schema(j); !ok) {
      return ok.error();
    }
    return read_fields(j);
  } catch (const FieldError& e) {
    return Error{"malformed profctl capture: " + e.path + ": " + e.why};
  } catch (const std::exception& e) {  // bad_alloc, or a nlohmann error a check missed
    return not_a_capture(without_exception_tag(e.what()));
  }
}

}  // namespace profctl
