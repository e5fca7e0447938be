// SPDX-License-Identifier: MIT
#include "report/profile_loss.h"

#include <cstdio>
#include <vector>

#include "base/saturating.h"

namespace profctl {

uint64_t ProfileLoss::lost() const { return sat_add(sat_add(ring_dropped, queue_dropped), capped); }

uint64_t ProfileLoss::seen() const { return sat_add(recorded, lost()); }

double ProfileLoss::lost_share() const {
  const uint64_t s = seen();
  return s == 0 ? 0.0 : static_cast<double>(lost()) / static_cast<double>(s);
}

namespace {

// The causes that lost something, in the order they happen (target, queue, bounds).
std::vector<std::pair<uint64_t, const char*>> causes(const ProfileLoss& l) {
  std::vector<std::pair<uint64_t, const char*>> out;
  if (l.ring_dropped != 0) {
    out.emplace_back(l.ring_dropped, "ring full");
  }
  if (l.queue_dropped != 0) {
    out.emplace_back(l.queue_dropped, "not unwound in time");
  }
  if (l.capped != 0) {
    out.emplace_back(l.capped, "over profctl's bounds");
  }
  return out;
}

// What lowers each cause, by the options of the kind that lost.
std::string advice(const std::string& kind, const ProfileLoss& l) {
  std::string fewer;
  if (kind == "heap") {
    fewer = "a higher --mem-rate";
  } else if (kind == "mutex" || kind == "mutex_holders") {
    fewer = "a higher --mutex-fraction";
  } else if (kind == "block") {
    fewer = "a higher --block-rate";
  } else if (kind == "cpu" || kind == "wall" || kind == "threadcreate") {
    return "a lower --rate";
  }
  std::string s;
  if (l.ring_dropped != 0 || l.queue_dropped != 0) {
    s = "fewer records (" + (fewer.empty() ? std::string() : fewer + ", ") +
        "a smaller --probe-stack-bytes)";
    if (l.ring_dropped != 0) {
      s += " or a larger --probe-ring-bytes";
    }
  }
  return s;
}

bool lossy(const Profile& p) { return p.loss ? p.loss->lost() != 0 : p.dropped != 0; }

}  // namespace

std::string loss_unit(const std::string& kind) {
  if (kind == "heap") {
    return "allocation records";
  }
  if (kind == "block" || kind == "mutex" || kind == "mutex_holders") {
    return "wait records";
  }
  if (kind == "cpu" || kind == "wall") {
    return "samples";
  }
  if (kind == "threadcreate") {
    return "thread creations";
  }
  return "events";
}

std::string loss_percent(const ProfileLoss& l) {
  const uint64_t lost = l.lost();
  if (lost == 0) {
    return "0%";
  }
  if (lost >= l.seen()) {
    return "100%";
  }
  const double pct = 100.0 * l.lost_share();
  if (pct < 0.05) {
    return "<0.1%";
  }
  if (pct >= 99.95) {
    return ">99.9%";
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", pct);
  return buf;
}

std::string partial_line(const std::string& kind, const Profile& p) {
  if (!lossy(p)) {
    return "";
  }
  if (!p.loss) {
    return "partial: " + std::to_string(p.dropped) + " " + loss_unit(kind) +
           " lost; totals are lower bounds";
  }
  std::string why;
  for (const auto& [n, cause] : causes(*p.loss)) {
    why += (why.empty() ? "" : ", ") + std::string(cause);
  }
  return "partial: " + loss_percent(*p.loss) + " of " + loss_unit(kind) + " lost (" + why +
         "); totals are lower bounds";
}

std::string loss_account(const std::string& kind, const Profile& p) {
  if (!lossy(p)) {
    return "";
  }
  if (!p.loss) {
    return "lost " + std::to_string(p.dropped) + " " + loss_unit(kind);
  }
  const ProfileLoss& l = *p.loss;
  std::string s = "lost " + std::to_string(l.lost()) + " of " + std::to_string(l.seen()) + " " +
                  loss_unit(kind) + " (" + loss_percent(l) + "):";
  bool first = true;
  for (const auto& [n, cause] : causes(l)) {
    s += (first ? " " : ", ") + std::to_string(n) + " " + cause;
    first = false;
  }
  return s;
}

std::string loss_warning(const std::string& kind, const Profile& p) {
  if (!lossy(p)) {
    return "";
  }
  std::string s = kind + ": partial: " + loss_account(kind, p) + "; totals are lower bounds";
  if (p.loss) {
    if (std::string a = advice(kind, *p.loss); !a.empty()) {
      s += " (to lose less: " + a + ")";
    }
  }
  return s;
}

}  // namespace profctl
