// SPDX-License-Identifier: MIT
#include "unwind/target_dwfl.h"

#include <elfutils/libdwfl.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <span>
#include <string_view>

#include "base/fd.h"
#include "base/log.h"
#include "base/proc_maps.h"
#include "unwind/debug_cache.h"
#include "unwind/own_vdso.h"

namespace profctl {
namespace {

struct DwflDeleter {
  void operator()(Dwfl* d) const { dwfl_end(d); }
};
using DwflPtr = std::unique_ptr<Dwfl, DwflDeleter>;

// The first mapping of every path in /proc/PID/maps text: what modules() and find_elf need.
std::map<std::string, MapEntry, std::less<>> parse_first_mappings(std::string_view text) {
  std::map<std::string, MapEntry, std::less<>> out;
  for (MapEntry& m : parse_maps(text)) {
    if (!m.path.empty() && m.start < m.end) {
      std::string path = m.path;
      out.try_emplace(std::move(path), std::move(m));
    }
  }
  return out;
}

// Separate debug files: dwfl_standard_find_debuginfo searches, for each directory here,
// by build-id (DIR/.build-id/xx/yyyy.debug) and by .gnu_debuglink (beside the file, in
// its .debug/, and under DIR + the file's directory). This is libdwfl's default path,
// spelled out so that /usr/lib/debug is searched whatever libdwfl's build default is.
char g_debuginfo_path[] = ":.debug:/usr/lib/debug";
char* g_debuginfo_path_ptr = g_debuginfo_path;

// debuginfod: dwfl_standard_find_debuginfo asks it (and can block on the network for
// seconds) whenever DEBUGINFOD_URLS is set in the environment, with no per-Dwfl switch in
// elfutils 0.188. So unless the user asked for it, the variable is removed from profctl's
// own environment before any Dwfl looks for debug info. This is process-wide on purpose:
// no Dwfl in profctl should go to the network behind the user's back.
void apply_debuginfod_policy(bool debuginfod) {
  if (!debuginfod) {
    unsetenv("DEBUGINFOD_URLS");
  }
}

std::string dwfl_error_text() { return dwfl_errmsg(-1); }

// The executable PT_LOADs of `mod`'s ELF, where the target has them: the segment's own
// address (moved by the load bias), size and file offset, not the page-aligned mapping
// /proc/PID/maps shows. Both kinds of pprof reader are right with these: google/pprof maps
// an address to a file offset (pc - start + offset, consistent either way), while
// `go tool pprof` takes pc - start + p_vaddr of the first executable PT_LOAD, which is only
// right when start is that segment's exact address (lld puts .text at 0x1780 in a page
// that starts at 0x1000). The program headers are untrusted input: a segment that is empty
// or wraps around is skipped.
std::vector<ModuleSegment> exec_segments(Dwfl_Module* mod) {
  std::vector<ModuleSegment> out;
  GElf_Addr bias = 0;
  Elf* elf = dwfl_module_getelf(mod, &bias);
  size_t nphdr = 0;
  if (elf == nullptr || elf_getphdrnum(elf, &nphdr) != 0) {
    return out;
  }
  for (size_t i = 0; i < nphdr && i < 4096; ++i) {
    GElf_Phdr ph;
    if (gelf_getphdr(elf, static_cast<int>(i), &ph) == nullptr || ph.p_type != PT_LOAD ||
        (ph.p_flags & PF_X) == 0 || ph.p_memsz == 0) {
      continue;
    }
    const uint64_t start = ph.p_vaddr + bias;
    const uint64_t end = start + ph.p_memsz;
    if (end <= start || ph.p_vaddr + ph.p_memsz < ph.p_vaddr) {
      continue;
    }
    out.push_back({start, end, ph.p_offset});
  }
  return out;
}

// The state of one session. find_elf reaches it through each module's userdata slot.
struct Session {
  DwflPtr dwfl;
  pid_t pid = 0;                   // 0 for an offline session
  std::string maps_text;           // /proc/PID/maps at the last report
  std::shared_ptr<MapsMemo> memo;  // shared with the process's other TargetDwfls, or null
  uint64_t generation = 0;         // bumped at every report
  std::map<std::string, MapEntry, std::less<>> first_mapping;
  bool own_vdso = false;  // report_text: the vDSO is read from profctl's own (own_vdso.h)

  // The modules of `text`, /proc/PID/maps of the live process just read (read_live_maps):
  // the text that was checked is the one reported. libdwfl's own dwfl_linux_proc_report
  // reads the maps again, and a process that exited between the two reads showed none:
  // every module was dropped, and no stack of the capture had a name left.
  Result<void> report(std::string text);
  // The modules of `text` (/proc/PID/maps read earlier, the process perhaps gone).
  Result<void> report_text(std::string text, bool live = false);
  void load_all();
};

int find_elf(Dwfl_Module* mod, void** userdata, const char* modname, Dwarf_Addr base,
             char** file_name, Elf** elfp);

// A module's separate debug file: where its build-id names one under /usr/lib/debug and
// that file's sections are compressed (Debian's -dbg packages), its decompressed copy
// (DebugCache), so that libdw does not inflate the same file again in every session;
// otherwise libdwfl's own search. (libdwfl's search cannot be asked first: its build-id
// lookup keeps the Elf it opened, and the fd returned here would go unused.) The name is
// the original's (libdwfl resolves a .gnu_debugaltlink relative to it).
int find_debuginfo(Dwfl_Module* mod, void** userdata, const char* modname, GElf_Addr base,
                   const char* file_name, const char* debuglink_file, GElf_Word debuglink_crc,
                   char** debuginfo_file_name) {
  static const DebugCache cache = DebugCache::from_environment();
  const std::string id = module_build_id(mod);
  if (cache.enabled() && id.size() > 2) {
    const std::string path =
        "/usr/lib/debug/.build-id/" + id.substr(0, 2) + "/" + id.substr(2) + ".debug";
    if (auto fd = Fd::open(path, O_RDONLY)) {
      if (const int copy = cache.decompressed(fd->get(), id); copy >= 0) {
        *debuginfo_file_name = strdup(path.c_str());
        return copy;
      }
    }
  }
  return dwfl_standard_find_debuginfo(mod, userdata, modname, base, file_name, debuglink_file,
                                      debuglink_crc, debuginfo_file_name);
}

// find_elf for live targets. The module name is the path as the target sees it; the file
// is opened through /proc/PID/root so that a target in another mount namespace (a
// container) resolves its own file. "[vdso: PID]" and other bracketed names go to
// libdwfl's own callback, which reads the vdso image from /proc/PID/mem.
constexpr Dwfl_Callbacks kProcCallbacks{
    .find_elf = find_elf,
    .find_debuginfo = find_debuginfo,
    .section_address = nullptr,
    .debuginfo_path = &g_debuginfo_path_ptr,
};

constexpr Dwfl_Callbacks kOfflineCallbacks{
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = find_debuginfo,
    .section_address = dwfl_offline_section_address,
    .debuginfo_path = &g_debuginfo_path_ptr,
};

constexpr std::string_view kDeleted = " (deleted)";

// True when two /proc/PID/maps texts show one image: their first mappings (the executable)
// are the same file at the same address. After an exec the process shows another image,
// even of the same file (ASLR moves it), whose maps say nothing of the old one's modules.
// /proc/PID/maps of a live process, whole; "" once it has let go of its address space
// (exiting, a zombie). A long text takes several read(2)s, and one that exits between two
// of them shows only the first part: its address space still there after the last read
// says it was there for all of them.
Result<std::string> read_live_maps(pid_t pid) {
  auto maps = read_file("/proc/" + std::to_string(pid) + "/maps");
  if (!maps || maps->empty()) {
    return maps;
  }
  if (const auto pages = read_mapped_pages(pid); !pages || *pages == 0) {
    return std::string{};
  }
  return maps;
}

bool same_image(std::string_view a, std::string_view b) {
  auto first = [](std::string_view t) {
    auto maps = parse_maps(t.substr(0, t.find('\n')));
    return maps.empty() ? MapEntry{} : maps.front();
  };
  const MapEntry x = first(a);
  const MapEntry y = first(b);
  return !x.path.empty() && x.path == y.path && x.start == y.start;
}

// True when the process's files can no longer be reached through /proc/PID/root: it has
// exited (a zombie's root link is gone with its fs_struct) or was reaped.
bool root_unreachable(pid_t pid) {
  char link[64];
  std::snprintf(link, sizeof link, "/proc/%d/root", pid);
  char target[8];
  return readlink(link, target, sizeof target) < 0 && (errno == ENOENT || errno == ESRCH);
}

int find_elf(Dwfl_Module* mod, void** userdata, const char* modname, Dwarf_Addr base,
             char** file_name, Elf** elfp) {
  auto* self = static_cast<Session*>(userdata != nullptr ? *userdata : nullptr);
  if (self == nullptr || self->pid <= 0 || modname == nullptr || modname[0] != '/') {
    if (self != nullptr && self->own_vdso &&
        std::string_view(modname != nullptr ? modname : "").starts_with("[vdso")) {
      // Saved maps: the process may be gone, or another image by now (after an exec its
      // memory at that address is anything). The same vDSO, from profctl's own memory.
      const std::span<const char> image = own_vdso_image();
      *elfp = elf_memory(const_cast<char*>(image.data()), image.size());
      return -1;
    }
    return dwfl_linux_proc_find_elf(mod, userdata, modname, base, file_name, elfp);
  }
  std::string_view name(modname);
  std::string path;
  if (name.size() > kDeleted.size() && name.ends_with(kDeleted)) {
    // The file was replaced or removed since it was mapped: map_files still holds the
    // mapped inode, named by the range of the mapping.
    auto it = self->first_mapping.find(name);
    if (it == self->first_mapping.end()) {
      return dwfl_linux_proc_find_elf(mod, userdata, modname, base, file_name, elfp);
    }
    char buf[96];
    std::snprintf(buf, sizeof buf, "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, self->pid,
                  it->second.start, it->second.end);
    path = buf;
  } else {
    path = "/proc/" + std::to_string(self->pid) + "/root" + std::string(name);
  }
  auto fd = Fd::open(path, O_RDONLY);
  if (!fd && !name.ends_with(kDeleted) && root_unreachable(self->pid)) {
    // The process is gone or a zombie (a followed child read from its saved maps; a zombie
    // still answers kill(pid, 0) but has no root any more): its files by their own path,
    // which is the same file unless a container's mount namespace said otherwise.
    path = std::string(name);
    fd = Fd::open(path, O_RDONLY);
  }
  if (!fd) {
    logger("unwind")->debug("find_elf {}: {}", modname, fd.error().message());
    return -1;
  }
  // Device files can hang on read; only regular files are ELF images.
  struct stat st {};
  if (fstat(fd->get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    logger("unwind")->debug("find_elf {}: not a regular file", modname);
    return -1;
  }
  *file_name = strdup(path.c_str());
  *elfp = nullptr;  // libdwfl opens the ELF from the fd and takes ownership of it
  return fd->release();
}

// dwfl_getmodules callback: gives the module our Impl (for find_elf) and opens its ELF now,
// while the target's files are still reachable.
int load_module(Dwfl_Module* mod, void** userdata, const char* name, Dwarf_Addr /*start*/,
                void* arg) {
  if (*userdata == nullptr) {
    *userdata = arg;
  }
  Dwarf_Addr bias = 0;
  if (dwfl_module_getelf(mod, &bias) == nullptr) {
    logger("unwind")->debug("no ELF for {}: {}", name, dwfl_error_text());
  }
  return DWARF_CB_OK;
}

Result<void> Session::report(std::string text) { return report_text(std::move(text), true); }

Result<void> Session::report_text(std::string text, bool live) {
  maps_text = std::move(text);
  ++generation;
  first_mapping = parse_first_mappings(maps_text);
  // libdwfl reads maps from a FILE: the saved text, through a memory stream.
  std::unique_ptr<FILE, int (*)(FILE*)> f(fmemopen(maps_text.data(), maps_text.size(), "r"),
                                          fclose);
  if (!f) {
    return errno_error("fmemopen");
  }
  dwfl_report_begin(dwfl.get());
  int rc = dwfl_linux_proc_maps_report(dwfl.get(), f.get());
  // libdwfl reports the vDSO only from a live process (its AT_SYSINFO_EHDR); from a text it
  // is skipped. Live, it is reported here under libdwfl's name for it, "[vdso: PID]", which
  // its find_elf reads from the process's memory. From saved text the process may be gone,
  // and the vDSO is profctl's own when it is the same (own_vdso).
  own_vdso = false;
  if (rc == 0 && pid > 0) {
    const std::vector<MapEntry> maps = parse_maps(maps_text);
    auto vdso = std::find_if(maps.begin(), maps.end(),
                             [](const MapEntry& m) { return m.path == "[vdso]"; });
    if (vdso != maps.end() && live) {
      const std::string name = "[vdso: " + std::to_string(pid) + "]";
      if (dwfl_report_module(dwfl.get(), name.c_str(), vdso->start, vdso->end) == nullptr) {
        logger("unwind")->debug("vdso of {}: {}", pid, dwfl_error_text());
      }
    } else if (vdso != maps.end() && maps.front().path.starts_with('/')) {
      const std::string& exe = maps.front().path;
      own_vdso = shares_own_vdso("/proc/" + std::to_string(pid) + "/root" + exe,
                                 vdso->end - vdso->start) ||
                 (root_unreachable(pid) && shares_own_vdso(exe, vdso->end - vdso->start));
      const std::string name = "[vdso: " + std::to_string(pid) + "]";
      if (own_vdso &&
          dwfl_report_module(dwfl.get(), name.c_str(), vdso->start, vdso->end) == nullptr) {
        logger("unwind")->debug("vdso of {}: {}", pid, dwfl_error_text());
      }
    }
  }
  if (dwfl_report_end(dwfl.get(), nullptr, nullptr) != 0) {
    return Error{"dwfl_report_end " + std::to_string(pid) + ": " + dwfl_error_text()};
  }
  if (rc != 0) {
    return Error{"dwfl_linux_proc_maps_report " + std::to_string(pid) + ": " +
                 (rc < 0 ? dwfl_error_text() : std::string(std::strerror(rc)))};
  }
  load_all();
  return {};
}

void Session::load_all() { dwfl_getmodules(dwfl.get(), load_module, this, 0); }

}  // namespace

std::string module_build_id(Dwfl_Module* mod) {
  const unsigned char* bits = nullptr;
  GElf_Addr vaddr = 0;
  const int len = dwfl_module_build_id(mod, &bits, &vaddr);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < len && bits != nullptr; ++i) {
    out += kHex[bits[i] >> 4];
    out += kHex[bits[i] & 0xf];
  }
  return out;
}

struct TargetDwfl::Impl : Session {};

TargetDwfl::TargetDwfl(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TargetDwfl::~TargetDwfl() = default;

Result<std::unique_ptr<TargetDwfl>> TargetDwfl::for_process(pid_t pid, const DwflOptions& opts) {
  if (pid <= 0) {
    return Error{"bad pid " + std::to_string(pid)};
  }
  apply_debuginfod_policy(opts.debuginfod);
  auto impl = std::make_unique<Impl>();
  impl->pid = pid;
  impl->dwfl.reset(dwfl_begin(&kProcCallbacks));
  if (!impl->dwfl) {
    return Error{"dwfl_begin: " + dwfl_error_text()};
  }
  auto maps = read_live_maps(pid);
  if (!maps) {
    return maps.error();
  }
  if (maps->empty()) {
    return Error{"process " + std::to_string(pid) + " has no address space left (it is exiting)"};
  }
  if (auto r = impl->report(std::move(*maps)); !r) {
    return r.error();
  }
  return std::unique_ptr<TargetDwfl>(new TargetDwfl(std::move(impl)));
}

Result<std::unique_ptr<TargetDwfl>> TargetDwfl::for_maps(pid_t pid, std::string maps_text,
                                                         const DwflOptions& opts) {
  // Still the same image: the live report, which also finds the vdso (libdwfl reads it
  // from the process's memory).
  if (auto live = read_file("/proc/" + std::to_string(pid) + "/maps");
      live && !live->empty() && same_image(*live, maps_text)) {
    if (auto d = for_process(pid, opts)) {
      return d;
    }
  }
  if (pid <= 0) {
    return Error{"bad pid " + std::to_string(pid)};
  }
  apply_debuginfod_policy(opts.debuginfod);
  auto impl = std::make_unique<Impl>();
  impl->pid = pid;
  impl->dwfl.reset(dwfl_begin(&kProcCallbacks));
  if (!impl->dwfl) {
    return Error{"dwfl_begin: " + dwfl_error_text()};
  }
  if (auto r = impl->report_text(std::move(maps_text)); !r) {
    return r.error();
  }
  return std::unique_ptr<TargetDwfl>(new TargetDwfl(std::move(impl)));
}

Result<std::unique_ptr<TargetDwfl>> TargetDwfl::for_files(const std::vector<std::string>& paths) {
  apply_debuginfod_policy(false);
  auto impl = std::make_unique<Impl>();
  impl->dwfl.reset(dwfl_begin(&kOfflineCallbacks));
  if (!impl->dwfl) {
    return Error{"dwfl_begin: " + dwfl_error_text()};
  }
  dwfl_report_begin(impl->dwfl.get());
  for (const std::string& path : paths) {
    // ET_DYN files are placed at distinct addresses by libdwfl (from 0x10000 up): use the
    // module's bias (dwfl_module_getelf) to go from an ELF address to a Dwfl address.
    if (dwfl_report_offline(impl->dwfl.get(), path.c_str(), path.c_str(), -1) == nullptr) {
      std::string what = "dwfl_report_offline " + path + ": " + dwfl_error_text();
      dwfl_report_end(impl->dwfl.get(), nullptr, nullptr);
      return Error{std::move(what)};
    }
  }
  if (dwfl_report_end(impl->dwfl.get(), nullptr, nullptr) != 0) {
    return Error{"dwfl_report_end: " + dwfl_error_text()};
  }
  impl->load_all();
  return std::unique_ptr<TargetDwfl>(new TargetDwfl(std::move(impl)));
}

Result<void> TargetDwfl::refresh() {
  if (impl_->pid <= 0) {
    return {};  // offline: nothing changes
  }
  auto maps = read_live_maps(impl_->pid);
  if (!maps) {
    // Gone: the modules it had, which are what its snapshots refer to, unless another
    // reader saw more of them while it lived.
    const uint64_t gen = impl_->generation;
    if (auto r = from_memo(); r && impl_->generation != gen) {
      return {};
    }
    return maps.error();
  }
  if (maps->empty()) {
    // An exiting or zombie process with no address space left to show: the same.
    return from_memo();
  }
  if (*maps == impl_->maps_text) {
    return {};
  }
  if (!impl_->maps_text.empty() && !same_image(*maps, impl_->maps_text)) {
    // It called exec since (a capture that ends at the exec symbolizes after it): re-reported,
    // the new image's maps wiped every module the old image's stacks refer to. Under load,
    // 1 run in 25 of Heap.ExecEndsTheHeapProfileCleanly named no frame at all.
    return from_memo();
  }
  // A process on its way out can show its address space half torn down (libc and the
  // executable already unmapped, a few anonymous mappings left): re-reported, that wiped
  // the modules every stack still to be symbolized refers to. The executable is mapped
  // for the whole life of the process, so maps without it are such a view: keep the
  // modules.
  char exe[4096];
  const ssize_t n =
      readlink(("/proc/" + std::to_string(impl_->pid) + "/exe").c_str(), exe, sizeof exe - 1);
  if (n <= 0) {
    return from_memo();
  }
  std::string_view path(exe, static_cast<size_t>(n));
  if (path.ends_with(" (deleted)")) {
    path.remove_suffix(std::string_view(" (deleted)").size());
  }
  if (maps->find(std::string(" ") + std::string(path)) == std::string::npos) {
    return from_memo();
  }
  // Re-reporting on the same Dwfl keeps unchanged modules (name, start, end) with their
  // loaded ELF and DWARF, frees the gone ones and adds the new ones (docs/DESIGN.md "libdwfl" a.3).
  auto r = impl_->report(std::move(*maps));
  if (r && impl_->memo) {
    std::lock_guard lock(impl_->memo->mu);
    impl_->memo->text = impl_->maps_text;
  }
  return r;
}

Result<void> TargetDwfl::from_memo() {
  if (!impl_->memo) {
    return {};
  }
  std::string text;
  {
    std::lock_guard lock(impl_->memo->mu);
    text = impl_->memo->text;
  }
  // Only a newer view of the same image.
  if (text.empty() || text == impl_->maps_text || !same_image(text, impl_->maps_text)) {
    return {};
  }
  return impl_->report_text(std::move(text));
}

bool TargetDwfl::has_module_at(uint64_t pc) const {
  // A mapping of a file that is no ELF is reported as a module all the same: ld.so maps
  // /etc/ld.so.cache while it loads a library, often where the library lands next. A pc
  // there is in a module that is gone.
  Dwfl_Module* mod = dwfl_addrmodule(impl_->dwfl.get(), pc);
  Dwarf_Addr bias = 0;
  return mod != nullptr && dwfl_module_getelf(mod, &bias) != nullptr;
}

void TargetDwfl::share_maps(std::shared_ptr<MapsMemo> memo) {
  impl_->memo = std::move(memo);
  if (impl_->memo && impl_->pid > 0 && !impl_->maps_text.empty()) {
    std::lock_guard lock(impl_->memo->mu);
    if (impl_->memo->text.empty()) {
      impl_->memo->text = impl_->maps_text;
    }
  }
}

Dwfl* TargetDwfl::get() const { return impl_->dwfl.get(); }

uint64_t TargetDwfl::generation() const { return impl_->generation; }

pid_t TargetDwfl::pid() const { return impl_->pid; }

std::vector<ModuleInfo> TargetDwfl::modules() const {
  struct Ctx {
    const Session* impl;
    std::vector<ModuleInfo> out;
  } ctx{impl_.get(), {}};
  auto cb = [](Dwfl_Module* mod, void**, const char* name, Dwarf_Addr, void* arg) -> int {
    auto* c = static_cast<Ctx*>(arg);
    ModuleInfo info;
    Dwarf_Addr start = 0;
    Dwarf_Addr end = 0;
    dwfl_module_info(mod, nullptr, &start, &end, nullptr, nullptr, nullptr, nullptr);
    info.start = start;
    info.end = end;
    std::string_view n = name != nullptr ? name : "";
    if (n.starts_with("[vdso")) {
      info.path = "[vdso]";
    } else {
      info.path = std::string(n);
      if (auto it = c->impl->first_mapping.find(n); it != c->impl->first_mapping.end()) {
        info.file_offset = it->second.offset;
      }
    }
    info.build_id = module_build_id(mod);
    info.exec_segments = exec_segments(mod);
    c->out.push_back(std::move(info));
    return DWARF_CB_OK;
  };
  dwfl_getmodules(impl_->dwfl.get(), cb, &ctx, 0);
  return std::move(ctx.out);
}

}  // namespace profctl
