// SPDX-License-Identifier: MIT
#include "report/fail_if.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <limits>
#include <set>

#include "report/function_match.h"
#include "report/units.h"

namespace profctl {
namespace {

constexpr const char* kForm =
    "expected KIND[.TYPE]:SUBJECT OP THRESHOLD, e.g. 'cpu:parse>+10%', "
    "'heap.inuse_space:total>+1MiB', 'cpu:self:memcpy>+2pp'";

Error bad(std::string_view text, const std::string& why) {
  return Error{"--fail-if '" + std::string(text) + "': " + why + "; " + kForm};
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

struct Suffix {
  std::string_view name;
  Gate::Measure measure;
  Gate::UnitClass unit_class;
  double factor;
};

constexpr Suffix kSuffixes[] = {
    {"%", Gate::Measure::kPercent, Gate::UnitClass::kNone, 1},
    {"pp", Gate::Measure::kPoints, Gate::UnitClass::kNone, 1},
    {"ns", Gate::Measure::kAbsolute, Gate::UnitClass::kTime, 1},
    {"us", Gate::Measure::kAbsolute, Gate::UnitClass::kTime, 1e3},
    {"ms", Gate::Measure::kAbsolute, Gate::UnitClass::kTime, 1e6},
    {"s", Gate::Measure::kAbsolute, Gate::UnitClass::kTime, 1e9},
    {"B", Gate::Measure::kAbsolute, Gate::UnitClass::kBytes, 1},
    {"KiB", Gate::Measure::kAbsolute, Gate::UnitClass::kBytes, 1024.0},
    {"MiB", Gate::Measure::kAbsolute, Gate::UnitClass::kBytes, 1024.0 * 1024},
    {"GiB", Gate::Measure::kAbsolute, Gate::UnitClass::kBytes, 1024.0 * 1024 * 1024},
    {"kB", Gate::Measure::kAbsolute, Gate::UnitClass::kBytes, 1e3},
    {"KB", Gate::Measure::kAbsolute, Gate::UnitClass::kBytes, 1e3},
    {"MB", Gate::Measure::kAbsolute, Gate::UnitClass::kBytes, 1e6},
    {"GB", Gate::Measure::kAbsolute, Gate::UnitClass::kBytes, 1e9},
};

// "+10%", "-5ms", "2.5 MiB", "100": the threshold after the operator.
bool parse_threshold(std::string_view s, Gate& g) {
  s = trim(s);
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  if (s.empty() || !(std::isdigit(static_cast<unsigned char>(s.front())) || s.front() == '.')) {
    return false;
  }
  double v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v, std::chars_format::fixed);
  if (ec != std::errc() || !std::isfinite(v)) {
    return false;
  }
  const std::string_view unit = trim(std::string_view(end, s.data() + s.size() - end));
  const Suffix* found = nullptr;
  if (unit.empty()) {
    static constexpr Suffix kPlain{"", Gate::Measure::kAbsolute, Gate::UnitClass::kNone, 1};
    found = &kPlain;
  }
  for (const Suffix& sfx : kSuffixes) {
    if (unit == sfx.name) {
      found = &sfx;
    }
  }
  if (found == nullptr) {
    return false;
  }
  g.measure = found->measure;
  g.unit_class = found->unit_class;
  g.threshold = (negative ? -v : v) * found->factor;
  return true;
}

bool valid_kind(std::string_view s) {
  if (s.empty()) {
    return false;
  }
  for (char ch : s) {
    if (!(std::isalnum(static_cast<unsigned char>(ch)) || ch == '_' || ch == '-')) {
      return false;
    }
  }
  return true;
}

std::string number(double v, const char* suffix) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%+.2f%s", v, suffix);
  return buf;
}

// A value of `unit` for people; doubles (scaled bases) are rounded to the unit first.
std::string value_text(double v, const std::string& unit) {
  if (!std::isfinite(v)) {
    return v > 0 ? "inf" : "-inf";
  }
  const double clamped = std::clamp(v, -9.2e18, 9.2e18);
  return report_detail::format_value(static_cast<int64_t>(std::llround(clamped)), unit);
}

// The change of the function(s) the gate names, as people type names (function_match.h).
Result<DiffValue> function_value(const Gate& g, const TypeDiff& type) {
  const bool self = g.subject == Gate::Subject::kFunctionSelf;
  auto pattern = FunctionPattern::parse(g.function);
  if (!pattern) {
    return Error{"--fail-if '" + g.text + "': " + pattern.error().message()};
  }
  std::vector<std::string> names;
  names.reserve(type.functions.size());
  for (const FunctionDiff& f : type.functions) {
    names.push_back(f.name);
  }
  const FunctionPattern::Resolution r = pattern->resolve(names);
  if (!r.candidates.empty()) {
    return Error{"--fail-if '" + g.text + "': " + ambiguity_message(*pattern, r.candidates)};
  }
  if (r.names.empty()) {
    return Error{"--fail-if '" + g.text + "': no function '" + g.function + "' in the " + g.kind +
                 " profile of either capture"};
  }
  DiffValue sum;
  if (r.names.size() == 1) {
    // One name in several modules (clock_gettime in the vDSO and in libc) is all of them.
    for (const FunctionDiff& f : type.functions) {
      if (f.name == r.names.front()) {
        sum += self ? f.self : f.total;
      }
    }
    return sum;
  }
  // Several functions (overloads, a regex): summed per stack, so that a stack with two of
  // them (one overload calling another) counts once, as pprof's -focus counts it.
  const std::set<std::string> wanted(r.names.begin(), r.names.end());
  for (const StackDiff& s : type.stacks) {
    const bool hit = self ? !s.frames.empty() && wanted.count(s.frames.back()) != 0
                          : std::any_of(s.frames.begin(), s.frames.end(),
                                        [&](const auto& n) { return wanted.count(n) != 0; });
    if (hit) {
      sum += s.value;
    }
  }
  return sum;
}

}  // namespace

Result<Gate> parse_gate(std::string_view text) {
  Gate g;
  g.text = std::string(text);
  const std::string_view s = trim(text);
  const size_t colon = s.find(':');
  if (colon == std::string_view::npos) {
    return bad(text, "no ':' after the profile kind");
  }
  std::string_view kind = trim(s.substr(0, colon));
  if (const size_t dot = kind.find('.'); dot != std::string_view::npos) {
    g.type = std::string(trim(kind.substr(dot + 1)));
    kind = trim(kind.substr(0, dot));
    if (!valid_kind(g.type)) {
      return bad(text, "'" + g.type + "' is not a sample type name");
    }
  }
  if (!valid_kind(kind)) {
    return bad(text, "'" + std::string(kind) + "' is not a profile kind");
  }
  g.kind = std::string(kind);
  const std::string_view rest = s.substr(colon + 1);
  // The operator is the last '<' or '>' followed by a threshold: a C++ name can hold both
  // (std::vector<int>::push_back), a threshold never does.
  size_t op = std::string_view::npos;
  for (size_t i = rest.size(); i-- > 0;) {
    if (rest[i] != '<' && rest[i] != '>') {
      continue;
    }
    Gate candidate = g;
    const bool eq = i + 1 < rest.size() && rest[i + 1] == '=';
    if (parse_threshold(rest.substr(i + 1 + (eq ? 1 : 0)), candidate)) {
      g = candidate;
      g.greater = rest[i] == '>';
      g.or_equal = eq;
      op = i;
      break;
    }
  }
  if (op == std::string_view::npos) {
    return bad(text, "no comparison with a threshold (like >+10%, >+5ms, >+1MiB, >+2pp)");
  }
  std::string_view subject = trim(rest.substr(0, op));
  if (subject.empty()) {
    return bad(text, "no subject: 'total', a function, or 'self:' and a function");
  }
  if (subject == "total") {
    g.subject = Gate::Subject::kTotal;
  } else if (subject.rfind("self:", 0) == 0) {
    g.subject = Gate::Subject::kFunctionSelf;
    g.function = std::string(trim(subject.substr(5)));
    if (g.function.empty()) {
      return bad(text, "no function after 'self:'");
    }
  } else {
    g.subject = Gate::Subject::kFunctionTotal;
    g.function = std::string(subject);
  }
  if (g.subject != Gate::Subject::kTotal) {
    if (auto p = FunctionPattern::parse(g.function); !p) {
      return bad(text, p.error().message());
    }
  }
  return g;
}

Result<GateResult> evaluate_gate(const Gate& g, const CaptureDiff& diff) {
  const KindDiff* kind = nullptr;
  for (const KindDiff& k : diff.kinds) {
    if (k.kind == g.kind) {
      kind = &k;
    }
  }
  if (kind == nullptr || kind->types.empty()) {
    return Error{"--fail-if '" + g.text + "': no '" + g.kind + "' profile in both captures"};
  }
  const TypeDiff* type = &kind->types[kind->main];
  if (!g.type.empty()) {
    type = nullptr;
    std::string names;
    for (const TypeDiff& t : kind->types) {
      names += (names.empty() ? "" : ", ") + t.type.type;
      if (t.type.type == g.type) {
        type = &t;
      }
    }
    if (type == nullptr) {
      return Error{"--fail-if '" + g.text + "': the " + g.kind + " profile has no sample type '" +
                   g.type + "' (it has " + names + ")"};
    }
  }
  const std::string& unit = type->type.unit;
  if ((g.unit_class == Gate::UnitClass::kTime && unit != "nanoseconds") ||
      (g.unit_class == Gate::UnitClass::kBytes && unit != "bytes")) {
    return Error{"--fail-if '" + g.text + "': " + g.kind + "." + type->type.type + " is in " +
                 unit + ", the threshold in " +
                 (g.unit_class == Gate::UnitClass::kTime ? "time" : "bytes")};
  }
  DiffValue sum;
  const DiffValue* v = &type->total;
  std::string what =
      (type->type.type == g.kind ? g.kind : g.kind + "." + type->type.type) + " total";
  if (g.subject != Gate::Subject::kTotal) {
    auto found = function_value(g, *type);
    if (!found) {
      return found.error();
    }
    sum = *found;
    v = &sum;
    what = g.function + (g.subject == Gate::Subject::kFunctionSelf ? " self" : " total");
  }
  GateResult r;
  switch (g.measure) {
    case Gate::Measure::kPercent: {
      auto pct = v->change_percent();
      r.observed = pct ? *pct : std::numeric_limits<double>::infinity();
      break;
    }
    case Gate::Measure::kPoints:
      r.observed = v->change_pp();
      break;
    case Gate::Measure::kAbsolute:
      r.observed = v->change();
      break;
  }
  if (g.greater) {
    r.crossed = g.or_equal ? r.observed >= g.threshold : r.observed > g.threshold;
  } else {
    r.crossed = g.or_equal ? r.observed <= g.threshold : r.observed < g.threshold;
  }
  const auto pct = v->change_percent();
  r.message = g.text + ": " + what + " " + value_text(v->base, unit) + " -> " +
              value_text(v->now, unit) + " (" + (pct ? number(*pct, "%") : std::string("new")) +
              ", " + number(v->change_pp(), "pp") + ")";
  return r;
}

}  // namespace profctl
