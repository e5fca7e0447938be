// SPDX-License-Identifier: MIT
#include "unwind/cfi_modules.h"

#include <elfutils/libdwfl.h>

#include <map>
#include <mutex>
#include <string>

#include "base/log.h"
#include "unwind/target_dwfl.h"

namespace profctl {
namespace {

// Tables by build-id, for the whole process: a library mapped by many spaces (or seen
// again after a refresh) is compiled or read once. Weak: a table no session uses goes.
std::shared_ptr<const CfiTable> shared_table(const std::string& build_id, Elf* elf,
                                             const CfiCache& cache, CfiModules::Stats& st) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<const CfiTable>> tables;
  if (!build_id.empty()) {
    std::lock_guard lock(mu);
    if (auto t = tables[build_id].lock()) {
      ++st.shared;
      return t;
    }
  }
  bool from_cache = false;
  auto t = cache.load_or_compile(build_id, elf, &from_cache);
  if (!t) {
    ++st.failed;
    logger("unwind")->debug("CFI of build-id {}: {}", build_id, t.error().message());
    return nullptr;
  }
  ++(from_cache ? st.from_cache : st.compiled);
  auto p = std::make_shared<const CfiTable>(std::move(*t));
  if (!build_id.empty()) {
    std::lock_guard lock(mu);
    tables[build_id] = p;
  }
  return p;
}

}  // namespace

CfiModules CfiModules::load(Dwfl* dwfl, const CfiCache& cache) {
  CfiModules out(cache);
  struct Ctx {
    CfiModules* out;
    std::vector<CfiModule> placed;
  } ctx{&out, {}};
  auto cb = [](Dwfl_Module* mod, void**, const char*, Dwarf_Addr, void* arg) -> int {
    auto* c = static_cast<Ctx*>(arg);
    Dwarf_Addr start = 0;
    Dwarf_Addr end = 0;
    dwfl_module_info(mod, nullptr, &start, &end, nullptr, nullptr, nullptr, nullptr);
    const auto id = static_cast<uint32_t>(c->out->pending_.size());
    c->out->pending_.push_back({mod, false});
    c->placed.push_back({start, end, 0, nullptr, id});
    return DWARF_CB_OK;
  };
  dwfl_getmodules(dwfl, cb, &ctx, 0);
  out.stats_.modules = out.pending_.size();
  out.walker_ = CfiWalker(std::move(ctx.placed));
  return out;
}

void CfiModules::resolve(uint32_t id) {
  static const CfiTable kEmpty;
  if (id >= pending_.size() || pending_[id].loaded) {
    return;
  }
  pending_[id].loaded = true;
  auto* mod = static_cast<Dwfl_Module*>(pending_[id].module);
  Dwarf_Addr bias = 0;
  Elf* elf = dwfl_module_getelf(mod, &bias);
  std::shared_ptr<const CfiTable> t;
  if (elf == nullptr) {
    ++stats_.failed;
  } else {
    t = shared_table(module_build_id(mod), elf, cache_, stats_);
  }
  // The bias is known only now (libdwfl finds the ELF lazily): placed with the table.
  walker_.place(id, bias, t ? t.get() : &kEmpty);
  if (t) {
    tables_.push_back(std::move(t));
  }
}

void CfiModules::resolve_all() {
  for (uint32_t id = 0; id < pending_.size(); ++id) {
    resolve(id);
  }
}

}  // namespace profctl
