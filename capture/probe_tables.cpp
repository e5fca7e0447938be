// SPDX-License-Identifier: MIT
#include "capture/probe_tables.h"

#include <cstring>
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

ProbeTables::~ProbeTables() = default;

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

}  // namespace

bool ProbeTables::refresh(probe::SharedArea& area) {
  auto code = code_mappings(pid_);
  if (!code) {
    return false;
  }
  if (modules_ && *code == code_maps_) {
    return true;
  }
  code_maps_ = std::move(*code);
  if (!dwfl_) {
    auto d = TargetDwfl::for_process(pid_, DwflOptions{});
    if (!d) {
      logger("probe")->debug("unwind tables for pid {}: {}", pid_, d.error().message());
      return false;
    }
    dwfl_ = std::move(*d);
  } else if (auto r = dwfl_->refresh(); !r) {
    return false;
  }
  modules_ = CfiModules::load(dwfl_->get(), CfiCache::from_environment());
  modules_->resolve_all();
  std::vector<probe::UnwindModule> out;
  for (const CfiModule& m : modules_->walker().modules()) {
    if (m.table == nullptr || m.table->empty()) {
      continue;
    }
    const auto rows = m.table->rows();
    out.push_back({m.start, m.end, m.table->base() + m.bias, std::as_bytes(rows),
                   m.table->block_index(), m.table->block_shift()});
  }
  placed_ = area.publish_unwind_tables(std::move(out));
  logger("probe")->debug("unwind tables for pid {}: {} of {} modules placed in the probe area",
                         pid_, placed_, modules_->walker().modules().size());
  return true;
}

}  // namespace profctl
