// SPDX-License-Identifier: MIT
#include "report/diff_output.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>

#include "report/units.h"

namespace profctl {
namespace {

using Json = nlohmann::ordered_json;

std::string value_text(double v, const std::string& unit) {
  const double clamped = std::clamp(std::isfinite(v) ? v : 0.0, -9.2e18, 9.2e18);
  return report_detail::format_value(static_cast<int64_t>(std::llround(clamped)), unit);
}

std::string signed_text(double v, const std::string& unit) {
  std::string s = value_text(v, unit);
  return (s != "0" && s.front() != '-' ? "+" : "") + s;
}

std::string fixed(double v, const char* suffix) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%+.2f%s", v, suffix);
  return buf;
}

std::string change_percent_text(const DiffValue& v) {
  auto p = v.change_percent();
  return p ? fixed(*p, "%") : std::string("new");
}

std::string right(const std::string& s, size_t width) {
  return s.size() >= width ? s : std::string(width - s.size(), ' ') + s;
}

std::string side_text(const DiffSide& s) {
  const Capture& c = *s.capture;
  return s.path + " (pid " + std::to_string(c.target.pid) + ", " +
         (c.window.start.empty() ? "start unknown" : c.window.start) + ", " +
         report_detail::format_value(report_detail::seconds_to_ns(c.window.duration_s),
                                     "nanoseconds") +
         ")";
}

// "leaf < caller < ... < root", at most `max` frames: the end of a stack that changed is
// where the time went.
std::string stack_text(const std::vector<std::string>& root_first, size_t max = 6) {
  std::string s;
  size_t n = 0;
  for (auto f = root_first.rbegin(); f != root_first.rend(); ++f, ++n) {
    if (n == max) {
      return s + " < ...";
    }
    s += (s.empty() ? "" : " < ") + *f;
  }
  return s;
}

// A name that several rows share gets its module's file name: "clock_gettime ([vdso])".
std::string row_name(const FunctionDiff& f, const std::map<std::string, int>& names) {
  auto n = names.find(f.name);
  if (n == names.end() || n->second < 2) {
    return f.name;
  }
  const size_t slash = f.module.rfind('/');
  return f.name + " (" + (slash == std::string::npos ? f.module : f.module.substr(slash + 1)) + ")";
}

void write_function_rows(const std::vector<const FunctionDiff*>& rows, const std::string& unit,
                         const std::map<std::string, int>& names, std::ostream& out) {
  out << right("base", 12) << right("new", 12) << right("change", 13) << right("change%", 10)
      << right("pp", 9) << right("self change", 13) << "  function\n";
  for (const FunctionDiff* f : rows) {
    out << right(value_text(f->total.base, unit), 12) << right(value_text(f->total.now, unit), 12)
        << right(signed_text(f->total.change(), unit), 13)
        << right(change_percent_text(f->total), 10) << right(fixed(f->total.change_pp(), ""), 9)
        << right(signed_text(f->self.change(), unit), 13) << "  " << row_name(*f, names) << '\n';
  }
}

void write_type_text(const KindDiff& k, const TypeDiff& t, size_t top_n, std::ostream& out) {
  const std::string& unit = t.type.unit;
  const std::string what = t.type.type == k.kind ? k.kind : k.kind + " " + t.type.type;
  std::vector<const FunctionDiff*> worse, better;
  std::map<std::string, int> names;
  for (const FunctionDiff& f : t.functions) {
    ++names[f.name];
  }
  for (const FunctionDiff& f : t.functions) {
    if (f.total.change() > 0 && worse.size() < top_n) {
      worse.push_back(&f);
    }
  }
  for (auto f = t.functions.rbegin(); f != t.functions.rend(); ++f) {
    if (f->total.change() < 0 && better.size() < top_n) {
      better.push_back(&*f);
    }
  }
  if (worse.empty() && better.empty()) {
    out << "\n  no function changed\n";
    return;
  }
  if (!worse.empty()) {
    out << "\n  " << what
        << " by function (total: anywhere in the stack), largest regressions first:\n";
    write_function_rows(worse, unit, names, out);
  }
  if (!better.empty()) {
    out << "\n  " << what << " by function, largest improvements first:\n";
    write_function_rows(better, unit, names, out);
  }
  size_t shown = 0;
  out << "\n  stacks, largest regressions first:\n";
  for (const StackDiff& s : t.stacks) {
    if (shown == top_n || s.value.change() <= 0) {
      break;
    }
    ++shown;
    out << right(signed_text(s.value.change(), unit), 13) << " (" << change_percent_text(s.value)
        << ", " << fixed(s.value.change_pp(), "pp") << ")  " << stack_text(s.frames) << '\n';
  }
  if (shown == 0) {
    out << "    (none grew)\n";
  }
}

Json value_json(const DiffValue& v) {
  auto pct = v.change_percent();
  return Json{{"base", v.base},
              {"new", v.now},
              {"change", v.change()},
              {"change_percent", pct ? Json(*pct) : Json(nullptr)},
              {"base_share", v.base_share},
              {"new_share", v.now_share},
              {"change_pp", v.change_pp()}};
}

Json side_json(const DiffSide& s) {
  const Capture& c = *s.capture;
  return Json{{"path", s.path},
              {"pid", c.target.pid},
              {"exe", c.target.exe},
              {"start", c.window.start},
              {"duration_s", c.window.duration_s}};
}

}  // namespace

void write_diff_text(const CaptureDiff& d, const DiffSide& base, const DiffSide& now,
                     const std::vector<GateOutcome>& gates, size_t top_n, std::ostream& out) {
  out << "profctl diff\n  base: " << side_text(base) << "\n  new:  " << side_text(now) << '\n';
  if (d.normalized) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.4f", d.now_duration_s / d.base_duration_s);
    out << "  base values scaled by " << buf
        << " to the new capture's window (in-use memory and thread counts are not)\n";
  }
  if (!d.only_in_base.empty() || !d.only_in_now.empty()) {
    auto list = [](const std::vector<std::string>& v) {
      std::string s;
      for (const auto& k : v) {
        s += (s.empty() ? "" : ",") + k;
      }
      return s.empty() ? std::string("none") : s;
    };
    out << "  not compared: only in base " << list(d.only_in_base) << "; only in new "
        << list(d.only_in_now) << '\n';
  }
  if (d.kinds.empty()) {
    out << "\nno profile kind is in both captures\n";
  }
  for (const KindDiff& k : d.kinds) {
    out << '\n' << k.kind << ":";
    for (const TypeDiff& t : k.types) {
      out << (&t == &k.types.front() ? " " : "; ") << t.type.type << ' '
          << value_text(t.total.base, t.type.unit) << " -> " << value_text(t.total.now, t.type.unit)
          << " (" << change_percent_text(t.total) << ")";
    }
    out << '\n';
    if (!k.types.empty()) {
      write_type_text(k, k.types[k.main], top_n, out);
    }
  }
  if (!gates.empty()) {
    out << "\ngates:\n";
    for (const GateOutcome& g : gates) {
      out << (g.result.crossed ? "  FAIL  " : "  ok    ") << g.result.message << '\n';
    }
  }
}

void write_diff_json(const CaptureDiff& d, const DiffSide& base, const DiffSide& now,
                     const std::vector<GateOutcome>& gates, const std::string& tool_version,
                     std::ostream& out) {
  Json j;
  j["schema"] = kDiffSchema;
  j["tool_version"] = tool_version;
  j["base"] = side_json(base);
  j["new"] = side_json(now);
  j["normalized"] = d.normalized;
  j["only_in_base"] = d.only_in_base;
  j["only_in_new"] = d.only_in_now;
  j["profiles"] = Json::object();
  for (const KindDiff& k : d.kinds) {
    Json kind;
    kind["main_type"] = k.types.empty() ? Json(nullptr) : Json(k.types[k.main].type.type);
    kind["sample_types"] = Json::array();
    for (const TypeDiff& t : k.types) {
      Json tj{{"type", t.type.type},
              {"unit", t.type.unit},
              {"base_scale", t.scale},
              {"total", value_json(t.total)}};
      tj["functions"] = Json::array();
      for (const FunctionDiff& f : t.functions) {
        tj["functions"].push_back(Json{{"function", f.name},
                                       {"module", f.module},
                                       {"self", value_json(f.self)},
                                       {"total", value_json(f.total)}});
      }
      tj["stacks"] = Json::array();
      for (const StackDiff& s : t.stacks) {
        tj["stacks"].push_back(Json{{"frames", s.frames}, {"value", value_json(s.value)}});
      }
      kind["sample_types"].push_back(std::move(tj));
    }
    j["profiles"][k.kind] = std::move(kind);
  }
  j["gates"] = Json::array();
  bool regressed = false;
  for (const GateOutcome& g : gates) {
    regressed = regressed || g.result.crossed;
    j["gates"].push_back(Json{
        {"expression", g.gate.text},
        {"crossed", g.result.crossed},
        {"observed", std::isfinite(g.result.observed) ? Json(g.result.observed) : Json(nullptr)},
        {"message", g.result.message}});
  }
  j["regressed"] = regressed;
  out << j.dump(2, ' ', false, Json::error_handler_t::replace) << '\n';
}

}  // namespace profctl
