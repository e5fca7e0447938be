// SPDX-License-Identifier: MIT
#include "capture/probe_tables.h"

#include <cstring>
#include <optional>
#include <vector>

#include "attach/proc.h"
#include "base/log.h"
#include "base/proc_maps.h"
#include "probe/abi/probe_abi.h"

namespace profctl {

// The blob reads CfiRow's bytes as probe_unwind_row: one layout, checked here.
static_assert(sizeof(CfiRow) == sizeof(probe_unwind_row));
static_assert(offsetof(CfiRow, cfa_offset) == offsetof(probe_unwind_row, cfa_offset));
static_assert(offsetof(CfiRow, ra_offset) == offsetof(probe_unwind_row, ra_offset));
static_assert(offsetof(CfiRow, rbp_offset) == offsetof(probe_unwind_row, rbp_offset));
static_assert(offsetof(CfiRow, cfa) == offsetof(probe_unwind_row, cfa));
static_assert(offsetof(CfiRow, ra) == offsetof(probe_unwind_row, ra));
static_assert(offsetof(CfiRow, rbp) == offsetof(probe_unwind_row, rbp));
static_assert(uint8_t(CfaRule::kNone) == PROBE_CFA_NONE &&
              uint8_t(CfaRule::kRsp) == PROBE_CFA_RSP && uint8_t(CfaRule::kRbp) == PROBE_CFA_RBP &&
              uint8_t(CfaRule::kNotExpressible) == PROBE_CFA_NOT_EXPRESSIBLE);
static_assert(uint8_t(SavedRule::kUndefined) == PROBE_SAVED_UNDEFINED &&
              uint8_t(SavedRule::kSameValue) == PROBE_SAVED_SAME &&
              uint8_t(SavedRule::kAtCfa) == PROBE_SAVED_AT_CFA);

namespace {

// "start-end path" of every executable mapping of a file: what the tables depend on.
std::optional<std::string> code_mappings(pid_t pid) {
  auto text = read_maps_text(pid);
  if (!text) {
    return std::nullopt;
  }
  std::string out;
  for (const MapEntry& m : parse_maps(*text)) {
    if (m.executable && !m.path.empty()) {
      out += std::to_string(m.start) + "-" + std::to_string(m.end) + " " + m.path + "\n";
    }
  }
  return out;
}

// Reads the modules of `pid` and their tables (from the cache, or compiled).
std::shared_ptr<const ProbeTables::Placement> read_placement(pid_t pid, std::string code_maps) {
  auto d = TargetDwfl::for_process(pid, DwflOptions{});
  if (!d) {
    logger("probe")->debug("unwind tables for pid {}: {}", pid, d.error().message());
    return nullptr;
  }
  auto p = std::make_shared<ProbeTables::Placement>();
  p->code_maps = std::move(code_maps);
  p->dwfl = std::move(*d);
  p->modules =
      std::make_unique<CfiModules>(CfiModules::load(p->dwfl->get(), CfiCache::from_environment()));
  p->modules->resolve_all();
  for (const CfiModule& m : p->modules->walker().modules()) {
    if (m.table == nullptr || m.table->empty()) {
      continue;
    }
    p->list.push_back({m.start, m.end, m.table->base() + m.bias, std::as_bytes(m.table->rows()),
                       m.table->block_index(), m.table->block_shift()});
  }
  return p;
}

}  // namespace

void ProbeTables::prepare() {
  auto code = code_mappings(pid_);
  if (code && (!placement_ || *code != placement_->code_maps)) {
    if (auto p = read_placement(pid_, std::move(*code))) {
      placement_ = std::move(p);
      published_ = false;
    }
  }
}

bool ProbeTables::refresh(probe::SharedArea& area) {
  auto code = code_mappings(pid_);
  if (!code) {
    return false;
  }
  if (!placement_ || *code != placement_->code_maps) {
    auto p = read_placement(pid_, std::move(*code));
    if (!p) {
      return false;
    }
    placement_ = std::move(p);
    published_ = false;
  }
  if (published_) {
    return true;
  }
  placed_ = area.publish_unwind_tables(placement_->list);
  published_ = true;
  logger("probe")->debug("unwind tables for pid {}: {} of {} modules placed in the probe area",
                         pid_, placed_, placement_->list.size());
  return true;
}

}  // namespace profctl
