// SPDX-License-Identifier: MIT
#include "unwind/table_unwinder.h"

#include <cstdlib>
#include <cstring>
#include <string>

#include "base/log.h"

namespace profctl {
namespace {

// Deeper stacks than this go to libdwfl, whose bound (65536 frames) says how they end.
constexpr size_t kMaxTableFrames = 4096;

bool tables_enabled() {
  const char* v = std::getenv("PROFCTL_UNWIND_TABLES");
  return v == nullptr || std::strcmp(v, "0") != 0;
}

}  // namespace

TableUnwinder::TableUnwinder(TargetDwfl& dwfl, CfiCache cache)
    : dwfl_(dwfl), fallback_(dwfl), cache_(std::move(cache)), enabled_(tables_enabled()) {}

TableUnwinder::TableUnwinder(TargetDwfl& dwfl)
    : TableUnwinder(dwfl, CfiCache::from_environment()) {}

void TableUnwinder::log_tables() const {
  const auto& st = modules_->stats();
  logger("unwind")->debug(
      "CFI tables of {} modules: {} compiled, {} from the cache, {} shared, {} failed, {} "
      "never needed",
      st.modules, st.compiled, st.from_cache, st.shared, st.failed,
      st.modules - st.compiled - st.from_cache - st.shared - st.failed);
}

TableUnwinder::~TableUnwinder() {
  if (modules_) {
    log_tables();
  }
  if (counts_.tables + counts_.libdwfl == 0) {
    return;
  }
  std::string why;
  for (size_t i = 0; i < counts_.stops.size(); ++i) {
    if (counts_.stops[i] != 0 && CfiStop(i) != CfiStop::kOutermost) {
      why += (why.empty() ? "" : ", ") + std::string(to_string(CfiStop(i))) + " " +
             std::to_string(counts_.stops[i]);
    }
  }
  logger("unwind")->debug("unwound {} stacks through CFI tables, {} by libdwfl{}{}{}",
                          counts_.tables, counts_.libdwfl, why.empty() ? "" : " (", why,
                          why.empty() ? "" : ")");
}

std::optional<UnwindResult> TableUnwinder::walk_tables(const Snapshot& snap) {
  if (!modules_ || generation_ != dwfl_.generation()) {
    generation_ = dwfl_.generation();
    if (modules_) {
      log_tables();
    }
    modules_ = CfiModules::load(dwfl_.get(), cache_);
  }
  if (pcs_.empty()) {
    pcs_.resize(kMaxTableFrames);
  }
  if (snap.stack_bytes == nullptr && snap.stack_size != 0) {
    return std::nullopt;
  }
  const StackCopy copy{snap.stack_base, snap.stack_size, snap.stack_bytes.get()};
  CfiWalkResult w = modules_->walker().walk({snap.regs.rip, snap.regs.rsp, snap.regs.rbp}, copy,
                                            pcs_.data(), pcs_.size());
  // Each module's table is loaded when a walk first reaches it: at most once per module.
  while (w.stop == CfiStop::kNoTable) {
    modules_->resolve(w.module);
    w = modules_->walker().walk({snap.regs.rip, snap.regs.rsp, snap.regs.rbp}, copy, pcs_.data(),
                                pcs_.size());
  }
  ++counts_.stops[size_t(w.stop)];
  // One frame ending "cleanly" is what a clone/syscall stub without CFI looks like to
  // libdwfl too: DwflUnwinder has a retry for it.
  if (w.stop != CfiStop::kOutermost || w.frames < 2) {
    return std::nullopt;
  }
  UnwindResult out;
  out.frames.reserve(w.frames);
  for (size_t i = 0; i < w.frames; ++i) {
    out.frames.push_back({pcs_[i], i == 0});
  }
  return out;
}

UnwindResult TableUnwinder::unwind(const Snapshot& snap) {
  if (enabled_) {
    if (auto r = walk_tables(snap)) {
      ++counts_.tables;
      return std::move(*r);
    }
  }
  ++counts_.libdwfl;
  return fallback_.unwind(snap);
}

}  // namespace profctl
