// SPDX-License-Identifier: MIT
#include "report/json_writer.h"

#include <nlohmann/json.hpp>

#include "report/units.h"

namespace profctl {
namespace {

using Json = nlohmann::ordered_json;
using report_detail::hex;

Json frame_json(const Frame& f) {
  Json j = Json::object();
  j["pc"] = hex(f.pc);
  j["function"] = f.function ? Json(*f.function) : Json(nullptr);
  j["module"] = f.module;
  j["offset"] = hex(f.offset);
  j["file"] = f.file ? Json(*f.file) : Json(nullptr);
  j["line"] = f.line ? Json(*f.line) : Json(nullptr);
  j["inlined"] = f.inlined;
  if (f.function_start) {
    j["function_start"] = hex(*f.function_start);
  }
  return j;
}

Json frames_json(const std::vector<Frame>& frames) {
  Json j = Json::array();
  for (const Frame& f : frames) {
    j.push_back(frame_json(f));
  }
  return j;
}

Json pause_json(const PauseStats& p) {
  Json j = Json::object();
  j["world_stopped_ns"] = p.world_stopped_ns;
  j["stop_ns"] = p.stop_ns;
  j["capture_ns"] = p.capture_ns;
  j["resume_ns"] = p.resume_ns;
  j["threads"] = p.threads;
  j["stack_bytes"] = p.stack_bytes;
  if (p.median_ns) {
    j["median_ns"] = *p.median_ns;
  }
  if (p.worst_ns) {
    j["worst_ns"] = *p.worst_ns;
  }
  if (p.samples) {
    j["samples"] = *p.samples;
  }
  return j;
}

Json thread_json(const CaptureThread& t) {
  Json j = Json::object();
  j["tid"] = t.tid;
  j["name"] = t.name;
  j["state"] = t.state;
  if (t.wait_syscall) {
    j["wait_syscall"] = *t.wait_syscall;
  }
  if (t.wait_address) {
    j["wait_address"] = hex(*t.wait_address);
  }
  if (t.waiting_in) {
    j["waiting_in"] = *t.waiting_in;
  }
  if (t.waiting_ns) {
    j["waiting_ns"] = *t.waiting_ns;
  }
  j["cpu_ns"] = t.cpu_ns;
  j["truncated"] = t.truncated;
  if (t.truncated || !t.truncated_reason.empty()) {
    j["truncated_reason"] = t.truncated_reason;
  }
  j["frames"] = frames_json(t.frames);
  return j;
}

Json value_type_json(const SampleType& st) { return Json{{"type", st.type}, {"unit", st.unit}}; }

Json heap_stack_json(const CaptureHeapStack& s) {
  Json j = Json::object();
  j["objects"] = s.objects;
  j["bytes"] = s.bytes;
  j["raw_objects"] = s.raw_objects;
  j["raw_bytes"] = s.raw_bytes;
  if (s.oldest_age_ns) {
    j["oldest_age_ns"] = *s.oldest_age_ns;
  }
  if (s.oldest_tid) {
    j["oldest_tid"] = *s.oldest_tid;
  }
  j["frames"] = frames_json(s.frames);
  return j;
}

// `j` comes with {"at_ns": ...} for the peak, {"min_age_ns": ...} for the long-lived section.
Json heap_set_json(Json j, const CaptureHeapSet& set) {
  j["objects"] = set.objects;
  j["bytes"] = set.bytes;
  j["raw_objects"] = set.raw_objects;
  j["raw_bytes"] = set.raw_bytes;
  j["stacks"] = Json::array();
  for (const CaptureHeapStack& s : set.stacks) {
    j["stacks"].push_back(heap_stack_json(s));
  }
  return j;
}

void add_heap_json(Json& j, const CaptureHeap& h) {
  j["counters"] = Json::object();
  for (const auto& [k, v] : h.counters) {
    j["counters"][k] = v;
  }
  j["peak"] = heap_set_json(Json{{"at_ns", h.peak_at_ns}}, h.peak);
  j["leaks"] = heap_set_json(Json{{"min_age_ns", h.leak_min_age_ns}}, h.leaks);
}

Json profile_json(const Profile& p) {
  Json j = Json::object();
  Json types = Json::array();
  for (const SampleType& st : p.sample_types) {
    types.push_back(value_type_json(st));
  }
  j["sample_types"] = std::move(types);
  if (p.default_sample_type) {
    j["default_sample_type"] = *p.default_sample_type;
  }
  if (p.period_type) {
    j["period_type"] = value_type_json(*p.period_type);
  }
  j["period"] = p.period;
  j["dropped"] = p.dropped;
  if (p.loss) {
    j["loss"] = Json{{"recorded", p.loss->recorded},
                     {"ring_dropped", p.loss->ring_dropped},
                     {"queue_dropped", p.loss->queue_dropped},
                     {"capped", p.loss->capped}};
  }
  if (p.detail_omitted != 0) {
    j["detail_omitted"] = p.detail_omitted;
  }
  Json samples = Json::array();
  for (const Sample& s : p.samples) {
    Json js = Json::object();
    js["values"] = s.values;
    if (!s.raw_values.empty()) {
      js["raw_values"] = s.raw_values;
    }
    js["frames"] = frames_json(s.frames);
    js["labels"] = Json::object();
    for (const auto& [k, v] : s.labels) {
      js["labels"][k] = v;
    }
    samples.push_back(std::move(js));
  }
  j["samples"] = std::move(samples);
  if (p.heap) {
    add_heap_json(j, *p.heap);
  }
  return j;
}

}  // namespace

void write_capture_json(const Capture& c, std::ostream& out) {
  Json j = Json::object();
  j["schema"] = c.schema;
  j["tool_version"] = c.tool_version;
  j["target"] = Json{{"pid", c.target.pid}, {"exe", c.target.exe}, {"cmdline", c.target.cmdline}};
  j["window"] = Json{{"start", c.window.start}, {"duration_s", c.window.duration_s}};
  if (c.window.requested_hz > 0) {
    j["window"]["requested_hz"] = c.window.requested_hz;
    j["window"]["achieved_hz"] = c.window.achieved_hz;
  }
  j["options"] = Json::object();
  for (const auto& [k, v] : c.options) {
    j["options"][k] = v;
  }
  j["pause"] = pause_json(c.pause);
  j["threads"] = Json::array();
  for (const CaptureThread& t : c.threads) {
    j["threads"].push_back(thread_json(t));
  }
  j["profiles"] = Json::object();
  for (const auto& [kind, p] : c.profiles) {
    j["profiles"][kind] = profile_json(p);
  }
  j["modules"] = Json::array();
  for (const CaptureModule& m : c.modules) {
    Json segments = Json::array();
    for (const CaptureSegment& s : m.exec_segments) {
      segments.push_back(Json{
          {"start", hex(s.start)}, {"limit", hex(s.limit)}, {"file_offset", hex(s.file_offset)}});
    }
    j["modules"].push_back(Json{{"path", m.path},
                                {"start", hex(m.start)},
                                {"limit", hex(m.limit)},
                                {"file_offset", hex(m.file_offset)},
                                {"build_id", m.build_id},
                                {"exec_segments", std::move(segments)}});
  }
  j["warnings"] = c.warnings;
  // replace: a non-UTF-8 path must not make dump() throw.
  out << j.dump(2, ' ', false, Json::error_handler_t::replace) << '\n';
}

}  // namespace profctl
