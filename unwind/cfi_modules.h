// SPDX-License-Identifier: MIT
// CfiModules: the compiled CFI tables (cfi_table.h) of one libdwfl session's modules, placed
// at their load addresses, and the CfiWalker over them. A table is compiled once per
// build-id for the whole process (shared by every address space that maps the file) and
// loaded from the disk cache (cfi_cache.h) when a run before compiled it.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "unwind/cfi_cache.h"
#include "unwind/cfi_walker.h"

typedef struct Dwfl Dwfl;  // NOLINT: libdwfl's C handle

namespace profctl {

class CfiModules {
 public:
  struct Stats {
    uint64_t modules = 0;
    uint64_t compiled = 0;    // tables compiled from DWARF now
    uint64_t from_cache = 0;  // tables read from the disk cache
    uint64_t shared = 0;      // tables already in memory (another space, an earlier load)
    uint64_t failed = 0;      // modules without an ELF or with an unreadable one
  };

  // The modules `dwfl` reports now (call again after its modules change), without their
  // tables: each is loaded when a walk first reaches the module (resolve), so a module no
  // stack passes through costs nothing. `dwfl` must outlive this and not change.
  static CfiModules load(Dwfl* dwfl, const CfiCache& cache);

  // Loads module `id`'s table (CfiWalkResult::module after a kNoTable stop). A module
  // whose table cannot be had gets an empty one: walks then stop there with kNoRow.
  void resolve(uint32_t id);
  void resolve_all();

  const CfiWalker& walker() const { return walker_; }
  const Stats& stats() const { return stats_; }

 private:
  struct Pending {
    void* module = nullptr;  // Dwfl_Module*
    bool loaded = false;
  };
  explicit CfiModules(const CfiCache& cache) : cache_(cache), walker_({}) {}

  CfiCache cache_;
  std::vector<Pending> pending_;                         // by CfiModule::id
  std::vector<std::shared_ptr<const CfiTable>> tables_;  // keeps the walker's tables alive
  CfiWalker walker_;
  Stats stats_;
};

}  // namespace profctl
