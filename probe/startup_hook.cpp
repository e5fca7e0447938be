// SPDX-License-Identifier: MIT
#include "probe/startup_hook.h"

#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <string>

#include "attach/proc.h"
#include "attach/target_memory.h"
#include "base/fd.h"
#include "probe/elf_symbols.h"
#include "probe/link_map.h"

namespace profctl::probe {
namespace {

// Reads of a stopped program through /proc/PID/mem; it runs nothing.
class ProcMemory final : public TargetMemory {
 public:
  ProcMemory(pid_t pid, Fd mem) : pid_(pid), mem_(std::move(mem)) {}
  pid_t pid() const override { return pid_; }
  Result<size_t> read(uint64_t addr, std::span<std::byte> out) override {
    ssize_t n = pread(mem_.get(), out.data(), out.size(), static_cast<off_t>(addr));
    if (n < 0) {
      return errno_error("reading the target's memory");
    }
    return static_cast<size_t>(n);
  }
  Result<void> write(uint64_t /*addr*/, std::span<const std::byte> /*data*/) override {
    return Error{"read-only view of the target"};
  }
  Result<long> syscall(long /*nr*/, std::array<uint64_t, 6> /*args*/) override {
    return Error{"read-only view of the target"};
  }

 private:
  pid_t pid_;
  Fd mem_;
};

}  // namespace

Result<uint64_t> dynamic_linker_hook(pid_t pid) {
  auto auxv = read_auxv(pid, {AT_BASE});
  if (!auxv) {
    return auxv.error();
  }
  const uint64_t base = auxv->contains(AT_BASE) ? auxv->at(AT_BASE) : 0;
  if (base == 0) {
    return Error{"no dynamic linker (a static program)"};
  }
  auto text = read_maps_text(pid);
  if (!text) {
    return text.error();
  }
  const std::vector<MapEntry> maps = parse_maps(*text);
  const MapEntry* m = find_mapping(maps, base);
  if (m == nullptr || m->path.empty() || m->path[0] != '/') {
    return Error{"the dynamic linker's mapping has no file"};
  }
  const std::string name = "_dl_debug_state";
  auto syms = read_elf_functions(m->path, std::span(&name, 1));
  if (!syms) {
    return syms.error();
  }
  auto f = syms->functions.find(name);
  if (f == syms->functions.end() || f->second.ifunc) {
    return Error{m->path + " has no " + name};
  }
  auto bias = load_bias(*syms, maps, m->path);
  if (!bias) {
    return bias.error();
  }
  const uint64_t at = *bias + f->second.value;
  // run_to_hook emulates the function on the calls it declines: only a bare return allows it.
  auto mem = Fd::open("/proc/" + std::to_string(pid) + "/mem", O_RDONLY);
  if (!mem) {
    return mem.error();
  }
  std::array<uint8_t, 5> code{};
  if (pread(mem->get(), code.data(), code.size(), static_cast<off_t>(at)) !=
      static_cast<ssize_t>(code.size())) {
    return errno_error("reading " + name);
  }
  constexpr std::array<uint8_t, 4> kEndbr64{0xf3, 0x0f, 0x1e, 0xfa};
  const bool bare_ret =
      code[0] == 0xc3 || (std::memcmp(code.data(), kEndbr64.data(), 4) == 0 && code[4] == 0xc3);
  if (!bare_ret) {
    return Error{name + " in " + m->path + " is not a bare return"};
  }
  return at;
}

bool link_map_consistent(pid_t pid) {
  auto mem = Fd::open("/proc/" + std::to_string(pid) + "/mem", O_RDONLY);
  if (!mem) {
    return false;
  }
  ProcMemory target(pid, std::move(*mem));
  auto state = link_map_state(target);
  return state && *state == r_debug::RT_CONSISTENT;
}

}  // namespace profctl::probe
