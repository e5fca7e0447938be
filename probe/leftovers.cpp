// SPDX-License-Identifier: MIT
#include "probe/leftovers.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <set>

#include "attach/proc.h"
#include "attach/stopped_world.h"
#include "base/fd.h"
#include "base/text_fields.h"
#include "probe/abi/probe_abi.h"

namespace profctl::probe {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMaxCodeArea = 64ULL << 20;
constexpr uint64_t kMaxSlots = 1ULL << 16;
constexpr size_t kPatchSpan = 9;  // endbr64 + jmp rel32: the most a patch changes
constexpr size_t kCompare = 16;
constexpr const char kMemfdPrefix[] = "/memfd:profctl-probe";

template <class T>
bool read_obj(StoppedWorld& w, uint64_t addr, T& out) {
  auto n = w.read(addr, std::as_writable_bytes(std::span(&out, 1)));
  return n && *n == sizeof out;
}

template <class T>
bool write_obj(StoppedWorld& w, uint64_t addr, const T& v) {
  return static_cast<bool>(w.write(addr, std::as_bytes(std::span(&v, 1))));
}

bool in_executable_file(const std::vector<MapEntry>& maps, uint64_t addr) {
  const MapEntry* m = find_mapping(maps, addr);
  return m != nullptr && m->executable && !m->path.empty() && m->path[0] == '/';
}

struct OldArea {
  uint64_t start = 0;  // the blob header
  uint64_t end = 0;    // after the process-token page
  probe_blob_header header{};
};

// An earlier session's code area: an anonymous private mapping that starts with the blob
// header, followed (within its own extent) by the process-token page.
std::vector<OldArea> find_code_areas(StoppedWorld& w, const std::vector<MapEntry>& maps) {
  std::vector<OldArea> out;
  for (const MapEntry& m : maps) {
    if (!m.path.empty() || m.shared || !m.readable || m.end - m.start < kPage) {
      continue;
    }
    uint64_t magic = 0;
    if (!read_obj(w, m.start, magic) || magic != PROBE_ABI_MAGIC) {
      continue;
    }
    OldArea a;
    a.start = m.start;
    if (!read_obj(w, m.start, a.header)) {
      continue;
    }
    const uint64_t token = a.header.process_token;
    if (token <= a.start || token % kPage != 0 || token + kPage - a.start > kMaxCodeArea) {
      continue;
    }
    // The token page must be the anonymous mapping right after the code (or the same one,
    // when the code was never made executable).
    const MapEntry* t = find_mapping(maps, token);
    if (t == nullptr || !t->path.empty() || t->shared || t->end < token + kPage ||
        find_mapping(maps, a.start)->end < token) {
      continue;
    }
    a.end = token + kPage;
    out.push_back(a);
  }
  return out;
}

// The module file's bytes at a target address (through /proc/PID/root).
bool file_bytes(const std::vector<MapEntry>& maps, const std::string& root, uint64_t addr,
                std::span<uint8_t> out) {
  const MapEntry* m = find_mapping(maps, addr);
  if (m == nullptr || !m->executable || m->path.empty() || m->path[0] != '/' ||
      addr + out.size() > m->end) {
    return false;
  }
  auto fd = Fd::open(root + m->path, O_RDONLY | O_CLOEXEC);
  if (!fd) {
    return false;
  }
  const auto off = static_cast<off_t>(addr - m->start + m->offset);
  return pread(fd->get(), out.data(), out.size(), off) == static_cast<ssize_t>(out.size());
}

// True when `bytes` (the target's, from a site's entry) is profctl's patch into [lo, hi):
// a jmp rel32 at +0 or after an endbr64, or an int3 there.
bool is_our_patch(const uint8_t* bytes, uint64_t at, uint64_t lo, uint64_t hi) {
  for (size_t p : {size_t{0}, size_t{4}}) {
    if (bytes[p] == 0xcc) {
      return true;
    }
    if (bytes[p] == 0xe9) {
      int32_t rel = 0;
      std::memcpy(&rel, bytes + p + 1, sizeof rel);
      const uint64_t target = at + p + 5 + static_cast<int64_t>(rel);
      if (target >= lo && target < hi) {
        return true;
      }
    }
  }
  return false;
}

class Remover {
 public:
  Remover(StoppedWorld& w, std::string root, LeftoverReport& r)
      : w_(w), root_(std::move(root)), report_(r) {}

  void run() {
    auto text = read_maps_text(w_.pid());
    if (!text) {
      return;
    }
    maps_ = parse_maps(*text);
    for (pid_t tid : w_.stopped()) {
      if (auto regs = w_.regs(tid)) {
        rips_.push_back(regs->rip);
      }
    }
    std::set<uint64_t> shared_used;
    for (const OldArea& a : find_code_areas(w_, maps_)) {
      report_.found = true;
      remove_area(a, shared_used);
    }
    remove_orphan_shared(shared_used);
    close_orphan_fds();
  }

 private:
  // The control block an old area points at, if it lies in a profctl memfd mapping and
  // its layout is consistent with that mapping.
  const MapEntry* old_shared(const OldArea& a, probe_ctl& ctl) {
    const MapEntry* m = find_mapping(maps_, a.header.shared_area);
    if (m == nullptr || !m->path.starts_with(kMemfdPrefix) || a.header.shared_area != m->start ||
        !read_obj(w_, m->start, ctl) || ctl.magic != PROBE_ABI_MAGIC ||
        ctl.abi_version != PROBE_ABI_VERSION || ctl.area_size > m->end - m->start) {
      return nullptr;
    }
    return m;
  }

  void restore_sites(const OldArea& a) {
    std::set<uint64_t> done;
    for (const probe_blob_site& s : a.header.sites) {
      const uint64_t f = s.function;
      if (s.original == 0 || f == 0 || !done.insert(f).second) {
        continue;
      }
      uint8_t now[kCompare];
      uint8_t file[kCompare];
      auto n = w_.read(f, std::as_writable_bytes(std::span(now)));
      if (!n || *n != sizeof now || !file_bytes(maps_, root_, f, file)) {
        continue;
      }
      size_t first = kCompare;
      size_t last = 0;
      for (size_t i = 0; i < kCompare; ++i) {
        if (now[i] != file[i]) {
          first = std::min(first, i);
          last = i;
        }
      }
      if (first == kCompare) {
        continue;  // not patched (any more)
      }
      if (last >= kPatchSpan || !is_our_patch(now, f, a.start, a.end)) {
        report_.notes.push_back("an earlier profctl's patch at " + hex(f) +
                                " does not look like profctl's: left as it is");
        report_.clean = false;
        continue;
      }
      const bool inside = std::any_of(rips_.begin(), rips_.end(), [&](uint64_t rip) {
        return rip > f && rip < f + kPatchSpan;
      });
      if (inside ||
          !w_.write(f + first, std::as_bytes(std::span(file + first, last - first + 1)))) {
        report_.notes.push_back("could not restore an earlier profctl's patch at " + hex(f));
        report_.clean = false;
      }
    }
  }

  // Whether a thread of the old session is inside a call-through (its slot's depth > 0, ABI
  // v7), read from target memory slot by slot within the checked table. An unreadable
  // table counts as busy: the area is then left mapped, disabled.
  bool in_call_through(const OldArea& a, const probe_ctl& ctl) {
    if (ctl.threads_capacity == 0 || ctl.threads_capacity > kMaxSlots ||
        ctl.threads_offset > ctl.area_size ||
        ctl.threads_capacity * sizeof(probe_thread_slot) > ctl.area_size - ctl.threads_offset) {
      return true;
    }
    const uint64_t table = a.header.shared_area + ctl.threads_offset;
    for (uint64_t i = 0; i < ctl.threads_capacity; ++i) {
      uint64_t depth = 0;
      if (!read_obj(w_, table + i * sizeof(probe_thread_slot) + offsetof(probe_thread_slot, depth),
                    depth)) {
        return true;
      }
      if (depth != 0) {
        return true;
      }
    }
    return false;
  }

  // Waiting threads of the old session get their real return addresses back. The slot
  // table is read from target memory in bounded pieces; only a stack word that still holds
  // the old area's wait-return address is written, and only with an address of code.
  void restore_waits(const OldArea& a, const probe_ctl& ctl) {
    const uint64_t wait_return = a.start + a.header.wait_return_offset;
    if (wait_return >= a.end || ctl.threads_capacity == 0 || ctl.threads_capacity > kMaxSlots ||
        ctl.threads_offset > ctl.area_size ||
        ctl.threads_capacity * sizeof(probe_thread_slot) > ctl.area_size - ctl.threads_offset) {
      return;
    }
    const uint64_t table = a.header.shared_area + ctl.threads_offset;
    for (uint64_t i = 0; i < ctl.threads_capacity; ++i) {
      probe_thread_slot s{};
      const uint64_t at = table + i * sizeof s;
      if (!read_obj(w_, at, s) || s.key == 0 || s.wait_active == 0) {
        continue;
      }
      uint64_t word = 0;
      if (read_obj(w_, s.wait_slot, word) && word == wait_return &&
          in_executable_file(maps_, s.wait_ret)) {
        (void)write_obj(w_, s.wait_slot, s.wait_ret);
      }
      (void)write_obj(w_, at + offsetof(probe_thread_slot, wait_active), uint32_t{0});
    }
  }

  bool unmap(uint64_t start, uint64_t size) {
    auto r = w_.syscall(SYS_munmap, {start, size});
    return r && *r == 0;
  }

  void remove_area(const OldArea& a, std::set<uint64_t>& shared_used) {
    probe_ctl ctl{};
    const MapEntry* shared = old_shared(a, ctl);
    if (shared != nullptr) {
      shared_used.insert(shared->start);
      // Off first: every probe takes the original path from now on.
      (void)write_obj(w_, shared->start + offsetof(probe_ctl, enabled), uint32_t{0});
    }
    restore_sites(a);
    if (shared != nullptr) {
      restore_waits(a, ctl);
    }
    bool busy = shared != nullptr && in_call_through(a, ctl);
    busy = busy || std::any_of(rips_.begin(), rips_.end(),
                               [&](uint64_t rip) { return rip >= a.start && rip < a.end; });
    const std::string what = "an earlier profctl session's probe area at " + hex(a.start) + " (" +
                             std::to_string(a.end - a.start) + " bytes)";
    if (busy) {
      report_.in_use.push_back(what + " is still in use by a thread: left mapped, disabled");
      report_.clean = false;
      return;
    }
    if (!unmap(a.start, a.end - a.start)) {
      report_.notes.push_back("could not unmap " + what);
      report_.clean = false;
      return;
    }
    report_.notes.push_back("removed " + what);
    if (shared != nullptr) {
      if (unmap(shared->start, shared->end - shared->start)) {
        report_.notes.push_back("removed an earlier profctl session's shared area at " +
                                hex(shared->start) + " (" +
                                std::to_string(shared->end - shared->start) + " bytes)");
      } else {
        report_.clean = false;
      }
    }
  }

  // A shared area no code area points at: its session was killed before the code was
  // written, so nothing can use it.
  void remove_orphan_shared(const std::set<uint64_t>& used) {
    for (const MapEntry& m : maps_) {
      if (!m.path.starts_with(kMemfdPrefix) || used.count(m.start) != 0) {
        continue;
      }
      report_.found = true;
      if (unmap(m.start, m.end - m.start)) {
        report_.notes.push_back("removed an orphaned profctl shared area at " + hex(m.start));
      } else {
        report_.clean = false;
      }
    }
  }

  // A memfd still open in the target: a session killed between its creation and close.
  void close_orphan_fds() {
    const std::string dir = "/proc/" + std::to_string(w_.pid()) + "/fd";
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
      std::error_code lec;
      const std::string link = std::filesystem::read_symlink(e.path(), lec).string();
      if (lec || !link.starts_with(kMemfdPrefix)) {
        continue;
      }
      long fd = 0;
      try {
        fd = std::stol(e.path().filename().string());
      } catch (...) {
        continue;
      }
      report_.found = true;
      auto r = w_.syscall(SYS_close, {static_cast<uint64_t>(fd)});
      if (r && *r == 0) {
        report_.notes.push_back("closed an earlier profctl session's memfd (fd " +
                                std::to_string(fd) + ")");
      }
    }
  }

  StoppedWorld& w_;
  std::string root_;
  LeftoverReport& report_;
  std::vector<MapEntry> maps_;
  std::vector<uint64_t> rips_;
};

}  // namespace

LeftoverReport remove_leftovers(StoppedWorld& world, const std::string& root) {
  LeftoverReport report;
  Remover(world, root, report).run();
  return report;  // the caller says what is in the notes, once (a pass may be repeated)
}

}  // namespace profctl::probe
