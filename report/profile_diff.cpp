// SPDX-License-Identifier: MIT
#include "report/profile_diff.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <set>

#include "report/units.h"

namespace profctl {
namespace {

struct FunctionSums {
  std::string name;
  std::string module;
  std::vector<double> self;
  std::vector<double> total;
};

struct StackSums {
  std::vector<std::string> frames;
  std::vector<double> values;
};

// One profile summed per function and per stack, every sample type at once. In double: a
// sum of int64 values from a user's file cannot overflow it, only lose digits no report
// shows.
struct Sums {
  std::vector<double> totals;
  std::map<std::string, FunctionSums> functions;  // frame_identity -> sums
  std::map<std::string, StackSums> stacks;        // identities of the frames -> sums
};

std::string display_name(const Frame& f, bool lines) {
  std::string s = report_detail::frame_name(f);
  if (lines && f.file) {
    s += " " + *f.file + (f.line ? ":" + std::to_string(*f.line) : "");
  }
  return s;
}

// A function's identity across two captures: its name and the file name of its module. Not
// the module's path: two builds of one program usually live in two directories.
std::string identity(const Frame& f, bool lines) {
  const size_t slash = f.module.rfind('/');
  std::string id = display_name(f, lines);
  id += '\x1f';
  id += slash == std::string::npos ? f.module : f.module.substr(slash + 1);
  if (f.inlined) {
    id += "\x1di";
  }
  return id;
}

Sums sum_profile(const Profile& p, bool lines) {
  const size_t n = p.sample_types.size();
  Sums out;
  out.totals.assign(n, 0);
  for (const Sample& s : p.samples) {
    std::vector<double> v(n, 0);
    for (size_t i = 0; i < n && i < s.values.size(); ++i) {
      v[i] = static_cast<double>(s.values[i]);
      out.totals[i] += v[i];
    }
    std::string stack_key;
    std::vector<std::string> ids;
    ids.reserve(s.frames.size());
    for (const Frame& f : s.frames) {
      ids.push_back(identity(f, lines));
      stack_key += ids.back();
      stack_key += '\x1e';
    }
    auto [st, new_stack] = out.stacks.try_emplace(stack_key);
    if (new_stack) {
      st->second.values.assign(n, 0);
      for (auto f = s.frames.rbegin(); f != s.frames.rend(); ++f) {
        st->second.frames.push_back(display_name(*f, lines));
      }
      if (s.frames.empty()) {
        st->second.frames.push_back("[no frames]");
      }
    }
    std::set<std::string> seen;  // recursion counts once per stack toward the total
    for (size_t k = 0; k < s.frames.size(); ++k) {
      auto [fn, added] = out.functions.try_emplace(ids[k]);
      if (added) {
        fn->second.name = display_name(s.frames[k], lines);
        fn->second.module = s.frames[k].module;
        fn->second.self.assign(n, 0);
        fn->second.total.assign(n, 0);
      }
      for (size_t i = 0; i < n; ++i) {
        if (k == 0) {
          fn->second.self[i] += v[i];
        }
        if (seen.count(ids[k]) == 0) {
          fn->second.total[i] += v[i];
        }
      }
      seen.insert(ids[k]);
    }
    for (size_t i = 0; i < n; ++i) {
      st->second.values[i] += v[i];
    }
  }
  return out;
}

std::optional<size_t> type_index(const Profile& p, const SampleType& t) {
  for (size_t i = 0; i < p.sample_types.size(); ++i) {
    if (p.sample_types[i] == t) {
      return i;
    }
  }
  return std::nullopt;
}

TypeDiff diff_type(const Sums& base, size_t bi, const Sums& now, size_t ni, const SampleType& type,
                   double scale) {
  TypeDiff d;
  d.type = type;
  d.scale = scale;
  const double bt = base.totals[bi];
  const double nt = now.totals[ni];
  d.total = diff_value(bt, nt, scale, bt, nt);
  static const std::vector<double> kNone;
  auto at = [](const std::vector<double>& v, size_t i) { return i < v.size() ? v[i] : 0.0; };
  std::set<std::string> keys;
  for (const auto& [k, f] : base.functions) {
    keys.insert(k);
  }
  for (const auto& [k, f] : now.functions) {
    keys.insert(k);
  }
  for (const std::string& k : keys) {
    auto b = base.functions.find(k);
    auto n = now.functions.find(k);
    const FunctionSums& any = n != now.functions.end() ? n->second : b->second;
    const auto& bself = b != base.functions.end() ? b->second.self : kNone;
    const auto& btot = b != base.functions.end() ? b->second.total : kNone;
    const auto& nself = n != now.functions.end() ? n->second.self : kNone;
    const auto& ntot = n != now.functions.end() ? n->second.total : kNone;
    FunctionDiff f{any.name, any.module, diff_value(at(bself, bi), at(nself, ni), scale, bt, nt),
                   diff_value(at(btot, bi), at(ntot, ni), scale, bt, nt)};
    if (f.total.base != 0 || f.total.now != 0) {
      d.functions.push_back(std::move(f));
    }
  }
  std::set<std::string> stack_keys;
  for (const auto& [k, s] : base.stacks) {
    stack_keys.insert(k);
  }
  for (const auto& [k, s] : now.stacks) {
    stack_keys.insert(k);
  }
  for (const std::string& k : stack_keys) {
    auto b = base.stacks.find(k);
    auto n = now.stacks.find(k);
    const StackSums& any = b != base.stacks.end() ? b->second : n->second;
    StackDiff s{any.frames,
                diff_value(b != base.stacks.end() ? at(b->second.values, bi) : 0.0,
                           n != now.stacks.end() ? at(n->second.values, ni) : 0.0, scale, bt, nt)};
    if (s.value.base != 0 || s.value.now != 0) {
      d.stacks.push_back(std::move(s));
    }
  }
  // Largest regressions first; ties by name so that the order never depends on a map's.
  std::stable_sort(d.functions.begin(), d.functions.end(), [](const auto& a, const auto& b) {
    if (a.total.change() != b.total.change()) {
      return a.total.change() > b.total.change();
    }
    return a.name < b.name;
  });
  std::stable_sort(d.stacks.begin(), d.stacks.end(), [](const auto& a, const auto& b) {
    return a.value.change() > b.value.change();
  });
  return d;
}

}  // namespace

std::optional<double> DiffValue::change_percent() const {
  if (base == 0) {
    return now == 0 ? std::optional<double>(0.0) : std::nullopt;
  }
  return 100.0 * (now - base) / (base < 0 ? -base : base);
}

DiffValue& DiffValue::operator+=(const DiffValue& o) {
  base += o.base;
  now += o.now;
  base_share += o.base_share;
  now_share += o.now_share;
  return *this;
}

bool is_gauge(const std::string& kind, const SampleType& type) {
  return kind == "threads" || type.type.rfind("inuse_", 0) == 0;
}

double base_scale(const std::string& kind, const SampleType& type, double base_duration_s,
                  double now_duration_s, bool normalize) {
  if (!normalize || is_gauge(kind, type) || !(base_duration_s > 0) || !(now_duration_s > 0)) {
    return 1;
  }
  return now_duration_s / base_duration_s;
}

DiffValue diff_value(double base, double now, double scale, double base_total, double now_total) {
  DiffValue v;
  v.base = base * scale;
  v.now = now;
  v.base_share = base_total != 0 ? 100.0 * base / base_total : 0;
  v.now_share = now_total != 0 ? 100.0 * now / now_total : 0;
  return v;
}

CaptureDiff diff_captures(const Capture& base, const Capture& now, const DiffOptions& opts,
                          const std::string& sample_index) {
  CaptureDiff d;
  d.base_duration_s = base.window.duration_s;
  d.now_duration_s = now.window.duration_s;
  for (const auto& [kind, bp] : base.profiles) {
    if (now.profiles.count(kind) == 0) {
      d.only_in_base.push_back(kind);
    }
  }
  for (const auto& [kind, np] : now.profiles) {
    auto b = base.profiles.find(kind);
    if (b == base.profiles.end()) {
      d.only_in_now.push_back(kind);
      continue;
    }
    const Profile& bp = b->second;
    const Sums bs = sum_profile(bp, opts.lines);
    const Sums ns = sum_profile(np, opts.lines);
    KindDiff k;
    k.kind = kind;
    const SampleType* main_type =
        np.sample_types.empty() ? nullptr : &np.sample_types[main_sample_type(np, sample_index)];
    for (size_t ni = 0; ni < np.sample_types.size(); ++ni) {
      const SampleType& t = np.sample_types[ni];
      auto bi = type_index(bp, t);
      if (!bi) {
        continue;
      }
      const double scale = base_scale(kind, t, d.base_duration_s, d.now_duration_s, opts.normalize);
      d.normalized = d.normalized || scale != 1;
      if (main_type != nullptr && t == *main_type) {
        k.main = k.types.size();
      }
      k.types.push_back(diff_type(bs, *bi, ns, ni, t, scale));
    }
    d.kinds.push_back(std::move(k));
  }
  return d;
}

Capture scaled_base(const Capture& base, const Capture& now, bool normalize) {
  Capture out = base;
  bool scaled = false;
  for (auto& [kind, p] : out.profiles) {
    for (size_t i = 0; i < p.sample_types.size(); ++i) {
      const double scale = base_scale(kind, p.sample_types[i], base.window.duration_s,
                                      now.window.duration_s, normalize);
      if (scale == 1) {
        continue;
      }
      scaled = true;
      for (Sample& s : p.samples) {
        if (i < s.values.size()) {
          // Clamped: llround of a double past int64's range is undefined.
          const double v = std::clamp(static_cast<double>(s.values[i]) * scale, -9.2e18, 9.2e18);
          s.values[i] = static_cast<int64_t>(std::llround(v));
        }
      }
    }
  }
  if (scaled) {
    out.window.duration_s = now.window.duration_s;
  }
  return out;
}

}  // namespace profctl
