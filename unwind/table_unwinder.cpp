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

const char* tables_setting() {
  const char* v = std::getenv("PROFCTL_UNWIND_TABLES");
  return v != nullptr ? v : "";
}

bool same_pcs(const UnwindResult& a, const UnwindResult& b) {
  if (a.frames.size() != b.frames.size()) {
    return false;
  }
  for (size_t i = 0; i < a.frames.size(); ++i) {
    if (a.frames[i].pc != b.frames[i].pc) {
      return false;
    }
  }
  return true;
}

}  // namespace

TableUnwinder::TableUnwinder(TargetDwfl& dwfl, CfiCache cache)
    : dwfl_(dwfl),
      fallback_(dwfl),
      cache_(std::move(cache)),
      enabled_(std::strcmp(tables_setting(), "0") != 0),
      check_(std::strcmp(tables_setting(), "check") == 0) {}

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
  if (check_) {
    logger("unwind")->info("CFI tables checked against libdwfl: {} stacks, {} differ",
                           counts_.checked, counts_.mismatched);
  }
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
      if (check_) {
        UnwindResult d = fallback_.unwind(snap);
        ++counts_.checked;
        if (!same_pcs(*r, d)) {
          ++counts_.mismatched;
          logger("unwind")->warn("tid {}: CFI tables give {} frames, libdwfl {} (first pc {:#x})",
                                 snap.tid, r->frames.size(), d.frames.size(), snap.regs.rip);
        }
      }
      return std::move(*r);
    }
  }
  ++counts_.libdwfl;
  return fallback_.unwind(snap);
}

}  // namespace profctl
