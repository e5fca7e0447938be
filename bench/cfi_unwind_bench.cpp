// SPDX-License-Identifier: MIT
// cfi_unwind_bench: stacks unwound per second on one core, compiled CFI tables
// (unwind/cfi_walker.h) against libdwfl (unwind/dwfl_unwinder.h), on the same captured
// stacks, per second of CPU time of the unwinding thread. The stacks are this process's own:
// recursion through three functions that alternate stack layouts, with qsort (libc frames) in the
// middle, captured by getcontext plus a copy of the stack above rsp, exactly what a Snapshot holds.
// Both unwinders must return the same pcs for every stack, or the bench fails.
//
//   cfi_unwind_bench [seconds-per-side=2] [depth=26]
#include <fcntl.h>
#include <gelf.h>
#include <sys/user.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "unwind/cfi_modules.h"
#include "unwind/dwfl_unwinder.h"
#include "unwind/target_dwfl.h"

namespace {

using profctl::Snapshot;

std::vector<Snapshot> g_stacks;
int g_depth = 26;
volatile int g_sink = 0;

uint64_t stack_end_of_main_thread() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    if (line.find("[stack]") != std::string::npos) {
      return std::stoull(line.substr(line.find('-') + 1), nullptr, 16);
    }
  }
  return 0;
}

__attribute__((noinline)) void capture() {
  ucontext_t uc;
  getcontext(&uc);
  Snapshot s;
  s.pid = getpid();
  s.tid = getpid();
  const auto* g = uc.uc_mcontext.gregs;
  s.regs.rip = uint64_t(g[REG_RIP]);
  s.regs.rsp = uint64_t(g[REG_RSP]);
  s.regs.rbp = uint64_t(g[REG_RBP]);
  s.regs.rbx = uint64_t(g[REG_RBX]);
  s.regs.r12 = uint64_t(g[REG_R12]);
  s.regs.r13 = uint64_t(g[REG_R13]);
  s.regs.r14 = uint64_t(g[REG_R14]);
  s.regs.r15 = uint64_t(g[REG_R15]);
  s.stack_end = stack_end_of_main_thread();
  s.stack_base = s.regs.rsp;
  s.stack_size = std::min<uint64_t>(s.stack_end - s.stack_base, 64 * 1024);
  s.stack_bytes = std::make_unique<std::byte[]>(s.stack_size);
  std::memcpy(s.stack_bytes.get(), reinterpret_cast<const void*>(s.stack_base), s.stack_size);
  g_stacks.push_back(std::move(s));
}

__attribute__((noinline)) void level_a(int n);
__attribute__((noinline)) void level_b(int n);
__attribute__((noinline)) void level_c(int n);

int g_qsort_depth = -1;

int compare(const void* a, const void* b) {
  if (g_qsort_depth >= 0) {
    int n = g_qsort_depth;
    g_qsort_depth = -1;
    level_a(n);
  }
  return *static_cast<const int*>(a) - *static_cast<const int*>(b);
}

// Three frame layouts: a leaf-ish small frame, a big buffer, one using rbp-based CFA
// (alloca forces a frame pointer).
__attribute__((noinline)) void level_a(int n) {
  if (n <= 0) {
    capture();
    return;
  }
  if (n == g_depth / 2 && g_qsort_depth == -2) {
    g_qsort_depth = n - 1;
    int v[2] = {2, 1};
    qsort(v, 2, sizeof v[0], compare);
    return;
  }
  level_b(n - 1);
  g_sink = g_sink + 1;
}

__attribute__((noinline)) void level_b(int n) {
  volatile char buf[200];
  buf[n % 200] = char(n);
  level_c(n - 1);
  g_sink = g_sink + buf[0];
}

__attribute__((noinline)) void level_c(int n) {
  auto* p = static_cast<volatile char*>(alloca(16 + (n & 7)));
  p[0] = char(n);
  level_a(n - 1);
  g_sink = g_sink + p[0];
}

// CPU time of this thread: "per second on one core" even when the machine is shared (a
// wall clock would count the time other processes ran).
double cpu_now() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

// One library: its table compiled from DWARF, and read back from a disk cache (a run after
// the first), CPU milliseconds each.
void compile_vs_cache(const char* path) {
  elf_version(EV_CURRENT);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  Elf* elf = fd >= 0 ? elf_begin(fd, ELF_C_READ_MMAP, nullptr) : nullptr;
  if (elf == nullptr) {
    return;
  }
  char dir[] = "/tmp/cfi_unwind_bench.XXXXXX";
  if (mkdtemp(dir) == nullptr) {
    return;
  }
  profctl::CfiCache cache(std::string(dir) + "/cfi", profctl::CfiCache::kDefaultMaxBytes);
  const std::string id = "0123456789abcdef0123456789abcdef01234567";
  double t0 = cpu_now();
  auto t = profctl::CfiTable::compile(elf);
  const double compile_ms = (cpu_now() - t0) * 1e3;
  if (t) {
    cache.store(id, *t);
    t0 = cpu_now();
    auto back = cache.load(id);
    const double load_ms = (cpu_now() - t0) * 1e3;
    std::printf("%s: %zu rows (%zu KiB), compile %.1f ms, from the cache %.2f ms%s\n", path,
                t->rows().size(), t->rows().size_bytes() / 1024, compile_ms, load_ms,
                back ? "" : " (load FAILED)");
  }
  std::filesystem::remove_all(dir);
  elf_end(elf);
  close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  const double secs = argc > 1 ? std::atof(argv[1]) : 2.0;
  g_depth = argc > 2 ? std::atoi(argv[2]) : 26;
  // Eight stacks: four depths, with and without qsort in the middle.
  for (int d = g_depth; d < g_depth + 4; ++d) {
    for (int q : {-1, -2}) {
      int saved = g_depth;
      g_depth = d;
      g_qsort_depth = q;
      level_a(d);
      g_depth = saved;
    }
  }
  auto dwfl = profctl::TargetDwfl::for_process(getpid(), {});
  if (!dwfl) {
    std::fprintf(stderr, "cfi_unwind_bench: %s\n", dwfl.error().message().c_str());
    return 1;
  }
  profctl::CfiCache no_cache;
  double t0 = cpu_now();
  profctl::CfiModules mods = profctl::CfiModules::load((*dwfl)->get(), no_cache);
  mods.resolve_all();
  double compile_s = cpu_now() - t0;
  profctl::DwflUnwinder dwfl_unwinder(**dwfl);

  // Same pcs both ways, or the numbers mean nothing.
  size_t total_frames = 0;
  for (const Snapshot& s : g_stacks) {
    uint64_t pcs[256];
    profctl::StackCopy copy{s.stack_base, s.stack_size, s.stack_bytes.get()};
    auto w = mods.walker().walk({s.regs.rip, s.regs.rsp, s.regs.rbp}, copy, pcs, 256);
    auto d = dwfl_unwinder.unwind(s);
    bool same = w.stop == profctl::CfiStop::kOutermost && w.frames == d.frames.size();
    for (size_t i = 0; same && i < w.frames; ++i) {
      same = pcs[i] == d.frames[i].pc;
    }
    if (!same) {
      std::fprintf(stderr, "cfi_unwind_bench: tables (%zu frames, %s) != libdwfl (%zu frames)\n",
                   w.frames, profctl::to_string(w.stop), d.frames.size());
      return 1;
    }
    total_frames += w.frames;
  }
  const double frames_per_stack = double(total_frames) / double(g_stacks.size());

  uint64_t n_cfi = 0;
  uint64_t check = 0;
  t0 = cpu_now();
  while (cpu_now() - t0 < secs) {
    for (int rep = 0; rep < 1000; ++rep) {
      const Snapshot& s = g_stacks[n_cfi % g_stacks.size()];
      uint64_t pcs[256];
      profctl::StackCopy copy{s.stack_base, s.stack_size, s.stack_bytes.get()};
      auto w = mods.walker().walk({s.regs.rip, s.regs.rsp, s.regs.rbp}, copy, pcs, 256);
      check += pcs[w.frames - 1];
      ++n_cfi;
    }
  }
  const double cfi_rate = double(n_cfi) / (cpu_now() - t0);

  uint64_t n_dwfl = 0;
  t0 = cpu_now();
  while (cpu_now() - t0 < secs) {
    for (int rep = 0; rep < 100; ++rep) {
      auto d = dwfl_unwinder.unwind(g_stacks[n_dwfl % g_stacks.size()]);
      check += d.frames.size();
      ++n_dwfl;
    }
  }
  const double dwfl_rate = double(n_dwfl) / (cpu_now() - t0);

  std::printf("stacks %zu, frames/stack %.1f, modules %" PRIu64 ", table compile %.1f ms\n",
              g_stacks.size(), frames_per_stack, mods.stats().modules, compile_s * 1e3);
  compile_vs_cache("/lib/x86_64-linux-gnu/libc.so.6");
  compile_vs_cache("/lib/x86_64-linux-gnu/libstdc++.so.6");
  std::printf("tables:  %12.0f stacks/s  %8.1f ns/stack\n", cfi_rate, 1e9 / cfi_rate);
  std::printf("libdwfl: %12.0f stacks/s  %8.1f ns/stack\n", dwfl_rate, 1e9 / dwfl_rate);
  std::printf("speedup: %.1fx   (check %" PRIu64 ")\n", cfi_rate / dwfl_rate, check & 1);
  return 0;
}
