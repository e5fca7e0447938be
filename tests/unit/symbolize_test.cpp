// SPDX-License-Identifier: MIT
// Offline symbolization of the symfix fixtures (no process): names, module+offset,
// file:line, inlined frames, stripped files and unknown addresses.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "attach/proc.h"
#include "symbolize/symbolizer.h"
#include "tests/unit/symfix_util.h"
#include "unwind/target_dwfl.h"

namespace profctl {
namespace {

using testing::basename_of;
using testing::find_symbol;
using testing::marker_line;

std::unique_ptr<TargetDwfl> open_files(const std::string& path) {
  auto t = TargetDwfl::for_files({path});
  EXPECT_TRUE(t.ok()) << (t.ok() ? "" : t.error().message());
  return t.ok() ? std::move(t).value() : nullptr;
}

std::string describe(const std::vector<Frame>& frames) {
  std::string s;
  for (const Frame& f : frames) {
    s += (f.function ? *f.function : "?") + " at " + (f.file ? basename_of(*f.file) : "?") + ":" +
         (f.line ? std::to_string(*f.line) : "?") + (f.inlined ? " (inlined)" : "") + " [" +
         f.module + "+0x" + std::to_string(f.offset) + "]\n";
  }
  return s;
}

TEST(Symbolize, MethodNameModuleOffsetAndLine) {
  auto t = open_files(SYMFIX_PATH);
  ASSERT_TRUE(t);
  auto sym = find_symbol(t->get(), "symfix", "_ZN2ns5Klass6methodEi");
  ASSERT_TRUE(sym);
  Symbolizer s(*t, {});
  const int body = marker_line("method_body");
  ASSERT_GT(body, 0);
  bool saw_body = false;
  for (uint64_t pc = sym->addr; pc < sym->addr + sym->size; ++pc) {
    const std::vector<Frame>& frames = s.symbolize(pc, /*activation=*/true);
    ASSERT_EQ(frames.size(), 1u) << describe(frames);
    const Frame& f = frames[0];
    EXPECT_EQ(f.pc, pc);
    EXPECT_EQ(f.function, "ns::Klass::method(int)");
    EXPECT_EQ(f.module, SYMFIX_PATH);
    EXPECT_EQ(f.offset, sym->elf_addr + (pc - sym->addr));
    EXPECT_FALSE(f.inlined);
    ASSERT_TRUE(f.file && f.line) << describe(frames);
    EXPECT_EQ(basename_of(*f.file), "symfix.cpp");
    EXPECT_GE(*f.line, body - 2);
    EXPECT_LE(*f.line, body + 2);
    saw_body = saw_body || *f.line == body;
  }
  EXPECT_TRUE(saw_body);
}

TEST(Symbolize, ReturnAddressIsLookedUpOneByteBack) {
  auto t = open_files(SYMFIX_PATH);
  ASSERT_TRUE(t);
  auto method = find_symbol(t->get(), "symfix", "_ZN2ns5Klass6methodEi");
  ASSERT_TRUE(method);
  Symbolizer s(*t, {});
  // The address just past the end of method(), as a return address, is the return from a
  // call that was the last instruction of method().
  uint64_t end = method->addr + method->size;
  const Frame& ret = s.symbolize(end, false).back();
  EXPECT_EQ(ret.function, "ns::Klass::method(int)");
  EXPECT_EQ(ret.pc, end);
  EXPECT_EQ(ret.offset, method->elf_addr + method->size);  // the unadjusted pc
}

// Finds a pc in `caller` where the line is the `body` marker of a function inlined into it.
std::optional<uint64_t> inlined_pc(TargetDwfl& t, Symbolizer& s,
                                   const char* caller = "_Z10inl_calleri",
                                   const char* marker = "inl_body") {
  auto sym = find_symbol(t.get(), "symfix", caller);
  if (!sym) {
    return std::nullopt;
  }
  const int body = marker_line(marker);
  for (uint64_t pc = sym->addr; pc < sym->addr + sym->size; ++pc) {
    const auto& frames = s.symbolize(pc, true);
    if (frames.size() == 2 && frames[0].line == body) {
      return pc;
    }
  }
  return std::nullopt;
}

TEST(Symbolize, InlinedFrameBeforeItsCaller) {
  auto t = open_files(SYMFIX_PATH);
  ASSERT_TRUE(t);
  Symbolizer s(*t, {});
  auto pc = inlined_pc(*t, s);
  ASSERT_TRUE(pc) << "no pc in inl_caller maps to inl_helper's body";
  const auto& frames = s.symbolize(*pc, true);
  ASSERT_EQ(frames.size(), 2u) << describe(frames);
  EXPECT_TRUE(frames[0].inlined);
  EXPECT_EQ(frames[0].function, "inl_helper");
  EXPECT_EQ(frames[0].line, marker_line("inl_body"));
  ASSERT_TRUE(frames[0].file);
  EXPECT_EQ(basename_of(*frames[0].file), "symfix.cpp");
  EXPECT_FALSE(frames[1].inlined);
  EXPECT_EQ(frames[1].function, "inl_caller(int)");
  // The physical frame is at the call site of the inlined function (DW_AT_call_line).
  EXPECT_EQ(frames[1].line, marker_line("inl_call"));
  ASSERT_TRUE(frames[1].file);
  EXPECT_EQ(basename_of(*frames[1].file), "symfix.cpp");
  EXPECT_EQ(frames[0].module, frames[1].module);
  EXPECT_EQ(frames[0].offset, frames[1].offset);
  EXPECT_EQ(frames[0].pc, *pc);
}

// An inlined function with internal linkage has no DW_AT_linkage_name (GCC emits none when
// no out-of-line copy exists): its frame is named by the DIE, qualified by its namespaces.
TEST(Symbolize, InlinedFrameWithoutLinkageNameIsQualified) {
  auto t = open_files(SYMFIX_PATH);
  ASSERT_TRUE(t);
  Symbolizer s(*t, {});
  auto pc = inlined_pc(*t, s, "_Z13ns_inl_calleri", "scaled_body");
  ASSERT_TRUE(pc) << "no pc in ns_inl_caller maps to scaled's body";
  const auto& frames = s.symbolize(*pc, true);
  ASSERT_EQ(frames.size(), 2u) << describe(frames);
  EXPECT_TRUE(frames[0].inlined);
  EXPECT_EQ(frames[0].function, "ns::detail::scaled");
  EXPECT_EQ(frames[0].line, marker_line("scaled_body"));
  EXPECT_EQ(frames[1].function, "ns_inl_caller(int)");
  EXPECT_EQ(frames[1].line, marker_line("scaled_call"));
}

TEST(Symbolize, NoInlineGivesOnlyThePhysicalFrame) {
  auto t = open_files(SYMFIX_PATH);
  ASSERT_TRUE(t);
  Symbolizer with(*t, {});
  auto pc = inlined_pc(*t, with);
  ASSERT_TRUE(pc);
  Symbolizer without(*t, {.inline_frames = false, .source = true});
  const auto& frames = without.symbolize(*pc, true);
  ASSERT_EQ(frames.size(), 1u) << describe(frames);
  EXPECT_FALSE(frames[0].inlined);
  EXPECT_EQ(frames[0].function, "inl_caller(int)");
  EXPECT_EQ(frames[0].line, marker_line("inl_call"));
}

TEST(Symbolize, NoSourceGivesNoFileOrLine) {
  auto t = open_files(SYMFIX_PATH);
  ASSERT_TRUE(t);
  Symbolizer with(*t, {});
  auto pc = inlined_pc(*t, with);
  ASSERT_TRUE(pc);
  Symbolizer s(*t, {.inline_frames = true, .source = false});
  const auto& frames = s.symbolize(*pc, true);
  ASSERT_EQ(frames.size(), 2u) << describe(frames);
  EXPECT_EQ(frames[0].function, "inl_helper");
  EXPECT_EQ(frames[1].function, "inl_caller(int)");
  for (const Frame& f : frames) {
    EXPECT_FALSE(f.file);
    EXPECT_FALSE(f.line);
  }
}

TEST(Symbolize, CFunctionAndMain) {
  auto t = open_files(SYMFIX_PATH);
  ASSERT_TRUE(t);
  Symbolizer s(*t, {});
  for (const char* name : {"chain_a", "chain_b", "chain_c", "main"}) {
    auto sym = find_symbol(t->get(), "symfix", name);
    ASSERT_TRUE(sym) << name;
    EXPECT_EQ(s.symbolize(sym->addr, true).back().function, name);
  }
}

TEST(Symbolize, StrippedFileStillGivesModuleAndOffset) {
  auto full = open_files(SYMFIX_PATH);
  auto stripped = open_files(SYMFIX_STRIPPED_PATH);
  ASSERT_TRUE(full && stripped);
  auto sym = find_symbol(full->get(), "symfix", "_ZN2ns5Klass6methodEi");
  ASSERT_TRUE(sym);
  uint64_t pc = sym->elf_addr + testing::module_bias(stripped->get(), "symfix_stripped");
  Symbolizer s(*stripped, {});
  const auto& frames = s.symbolize(pc, true);
  ASSERT_EQ(frames.size(), 1u) << describe(frames);
  EXPECT_EQ(frames[0].module, SYMFIX_STRIPPED_PATH);
  EXPECT_EQ(frames[0].offset, sym->elf_addr);
  EXPECT_EQ(frames[0].pc, pc);
  // No .symtab and no DWARF: nothing names a local function (.dynsym might, for exports).
  EXPECT_FALSE(frames[0].function.has_value()) << *frames[0].function;
  EXPECT_FALSE(frames[0].file);
  EXPECT_FALSE(frames[0].line);
}

TEST(Symbolize, UnknownAddress) {
  auto t = open_files(SYMFIX_PATH);
  ASSERT_TRUE(t);
  Symbolizer s(*t, {});
  for (uint64_t pc : {uint64_t{0}, uint64_t{0x10}, ~uint64_t{0} - 0xfff}) {
    for (bool act : {true, false}) {
      const auto& frames = s.symbolize(pc, act);
      ASSERT_EQ(frames.size(), 1u);
      EXPECT_EQ(frames[0].module, "[unknown]");
      EXPECT_EQ(frames[0].offset, pc);
      EXPECT_EQ(frames[0].pc, pc);
      EXPECT_FALSE(frames[0].function);
      EXPECT_FALSE(frames[0].file);
    }
  }
}

TEST(Symbolize, ResultsAreCachedPerPcAndActivation) {
  auto t = open_files(SYMFIX_PATH);
  ASSERT_TRUE(t);
  auto sym = find_symbol(t->get(), "symfix", "main");
  ASSERT_TRUE(sym);
  Symbolizer s(*t, {});
  const auto* first = &s.symbolize(sym->addr + 1, true);
  for (uint64_t pc = sym->addr; pc < sym->addr + sym->size; ++pc) {
    (void)s.symbolize(pc, false);
  }
  EXPECT_EQ(first, &s.symbolize(sym->addr + 1, true));
}

TEST(TargetDwfl, OfflineModules) {
  auto t = open_files(SYMFIX_PATH);
  ASSERT_TRUE(t);
  EXPECT_EQ(t->pid(), 0);
  auto mods = t->modules();
  ASSERT_EQ(mods.size(), 1u);
  EXPECT_EQ(mods[0].path, SYMFIX_PATH);
  EXPECT_LT(mods[0].start, mods[0].end);
  EXPECT_FALSE(mods[0].build_id.empty());
  EXPECT_EQ(mods[0].build_id.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_TRUE(t->refresh().ok());
}

TEST(TargetDwfl, MissingFileIsAnError) {
  auto t = TargetDwfl::for_files({"/nonexistent/profctl-no-such-file"});
  EXPECT_FALSE(t.ok());
  auto p = TargetDwfl::for_process(-5, {});
  EXPECT_FALSE(p.ok());
}

extern "C" __attribute__((noinline)) int zombie_marker(int x) {
  asm volatile("" : "+r"(x));
  return x + 1;
}

// A forked child of the test that waits for release() to exit (or to exec `exec_path`,
// with no arguments but its name and "60"); killed and reaped (by pid) if the test ends
// first.
class WaitingChild {
 public:
  explicit WaitingChild(const char* exec_path = nullptr) {
    if (pipe(go_) != 0) {
      return;
    }
    pid_ = fork();
    if (pid_ == 0) {
      close(go_[1]);
      char c;
      const bool released = read(go_[0], &c, 1) >= 0;
      if (released && exec_path != nullptr) {
        execl(exec_path, exec_path, "60", static_cast<char*>(nullptr));
      }
      _exit(released ? 0 : 1);
    }
    close(go_[0]);
  }
  ~WaitingChild() {
    release();
    if (pid_ > 0 && !reaped_) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  WaitingChild(const WaitingChild&) = delete;
  WaitingChild& operator=(const WaitingChild&) = delete;
  pid_t pid() const { return pid_; }
  // The child exits now.
  void release() {
    if (go_[1] >= 0) {
      close(go_[1]);
      go_[1] = -1;
    }
  }
  bool reap() {
    reaped_ = waitpid(pid_, nullptr, 0) == pid_;
    return reaped_;
  }

 private:
  int go_[2] = {-1, -1};
  pid_t pid_ = -1;
  bool reaped_ = false;
};

// A followed child that exits before its modules are loaded for symbolizing (the end of a
// capture) is a zombie until profctl reaps it: kill(pid, 0) still answers, but its root is
// gone, so its files are opened by their own path from the maps read while it lived.
TEST(TargetDwfl, AZombiesSavedMapsStillNameItsFunctions) {
  WaitingChild child;
  const pid_t pid = child.pid();
  ASSERT_GT(pid, 0);
  auto maps = read_maps_text(pid);
  child.release();
  ASSERT_TRUE(maps.ok());
  siginfo_t info{};
  ASSERT_EQ(waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOWAIT), 0);  // a zombie
  ASSERT_EQ(kill(pid, 0), 0);

  auto t = TargetDwfl::for_maps(pid, std::move(*maps), {});
  ASSERT_TRUE(t.ok()) << t.error().message();
  Symbolizer s(**t, {});
  const auto pc = reinterpret_cast<uint64_t>(&zombie_marker);
  const std::vector<Frame>& frames = s.symbolize(pc, /*activation=*/true);
  ASSERT_FALSE(frames.empty());
  EXPECT_EQ(frames.back().function, "zombie_marker") << describe(frames);
}

// A capture that ends at its target's exec symbolizes after it: refreshing the modules
// then must not take the new image's maps (they say nothing of the old image's stacks).
TEST(TargetDwfl, RefreshAfterAnExecKeepsTheOldImagesModules) {
  WaitingChild child("/bin/sleep");
  const pid_t pid = child.pid();
  ASSERT_GT(pid, 0);
  auto t = TargetDwfl::for_process(pid, {});
  ASSERT_TRUE(t.ok()) << t.error().message();
  auto has = [&](std::string_view part) {
    auto mods = (*t)->modules();
    return std::any_of(mods.begin(), mods.end(),
                       [&](const ModuleInfo& m) { return m.path.find(part) != std::string::npos; });
  };
  ASSERT_TRUE(has("unit_tests"));
  child.release();  // it execs sleep now
  bool execd = false;
  for (int i = 0; i < 500 && !execd; ++i) {
    usleep(10000);
    auto maps = read_maps_text(pid);
    execd = maps.ok() && maps->find("/sleep") != std::string::npos;
  }
  ASSERT_TRUE(execd) << "the child did not exec /bin/sleep";
  (void)(*t)->refresh();
  EXPECT_TRUE(has("unit_tests")) << "the old image's executable is gone from the modules";
  EXPECT_FALSE(has("/sleep")) << "the new image's maps were taken";
}

// A process's last samples are often unwound after it is gone, and a thread that ends in
// clock_gettime ends in the vDSO, which only the process's memory held: libdwfl does not
// report it from saved maps. profctl names it from its own image (the kernel maps the same
// one into every process of its ABI), so the dead child's vDSO frame reads as the live one.
TEST(TargetDwfl, AReapedProcesssVdsoFramesAreStillNamed) {
  void* vdso = dlopen("linux-vdso.so.1", RTLD_LAZY | RTLD_NOLOAD);
  ASSERT_NE(vdso, nullptr) << dlerror();
  const auto pc = reinterpret_cast<uint64_t>(dlsym(vdso, "__vdso_clock_gettime"));
  ASSERT_NE(pc, 0u) << dlerror();

  WaitingChild child;
  const pid_t pid = child.pid();
  ASSERT_GT(pid, 0);
  auto maps = read_maps_text(pid);  // the child has the parent's vDSO, where fork left it
  child.release();
  ASSERT_TRUE(child.reap());  // no /proc/PID any more
  ASSERT_TRUE(maps.ok());

  auto live = TargetDwfl::for_process(getpid(), {});
  ASSERT_TRUE(live.ok()) << live.error().message();
  const std::vector<Frame> want = Symbolizer(**live, {}).symbolize(pc, /*activation=*/true);
  ASSERT_FALSE(want.empty());
  ASSERT_TRUE(want.back().function.has_value()) << describe(want);

  auto dead = TargetDwfl::for_maps(pid, std::move(*maps), {});
  ASSERT_TRUE(dead.ok()) << dead.error().message();
  Symbolizer s(**dead, {});
  const std::vector<Frame>& got = s.symbolize(pc, /*activation=*/true);
  ASSERT_FALSE(got.empty());
  EXPECT_EQ(got.back().module, "[vdso]") << describe(got);
  EXPECT_EQ(got.back().function, want.back().function) << describe(got);
  EXPECT_EQ(got.back().offset, want.back().offset) << describe(got);
}

// Two images that map one file share its frames (SharedFrames): two `sleep` processes, each
// with libc where its own ASLR put it. The second image's lookup is a hit and gives what its
// own Symbolizer would compute, with its own pc.
TEST(Symbolize, ImagesOfOneFileShareItsFrames) {
  struct Sleeper {
    pid_t pid = -1;
    ~Sleeper() {
      if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, nullptr, 0);
      }
    }
  } one, two;
  for (Sleeper* s : {&one, &two}) {
    s->pid = fork();
    ASSERT_GE(s->pid, 0);
    if (s->pid == 0) {
      execl("/bin/sleep", "sleep", "60", static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  // Until each has exec'd and mapped its libc.
  std::unique_ptr<TargetDwfl> a;
  std::unique_ptr<TargetDwfl> b;
  std::unique_ptr<TargetDwfl> b_alone;
  std::optional<testing::SymbolAt> in_one;
  std::optional<testing::SymbolAt> in_two;
  for (int i = 0; i < 1000 && !(in_one && in_two); ++i) {
    usleep(10000);
    auto ta = TargetDwfl::for_process(one.pid, {});
    auto tb = TargetDwfl::for_process(two.pid, {});
    auto tc = TargetDwfl::for_process(two.pid, {});
    if (!ta.ok() || !tb.ok() || !tc.ok()) {
      continue;
    }
    a = std::move(ta).value();
    b = std::move(tb).value();
    b_alone = std::move(tc).value();
    in_one = find_symbol(a->get(), "libc.so", "getppid");
    in_two = find_symbol(b->get(), "libc.so", "getppid");
  }
  ASSERT_TRUE(in_one && in_two) << "no getppid in the sleepers' libc";
  auto shared = std::make_shared<SharedFrames>();
  Symbolizer sa(*a, {}, shared);
  Symbolizer sb(*b, {}, shared);
  Symbolizer unshared(*b_alone, {});
  const uint64_t pc_one = in_one->addr + 1;
  const uint64_t pc_two = in_two->addr + 1;
  const std::vector<Frame> got_one = sa.symbolize(pc_one, /*activation=*/true);
  EXPECT_EQ(shared->misses(), 1u);
  EXPECT_EQ(shared->hits(), 0u);
  const std::vector<Frame> got_two = sb.symbolize(pc_two, /*activation=*/true);
  EXPECT_EQ(shared->hits(), 1u) << "the second image reads nothing of libc";
  const std::vector<Frame>& own = unshared.symbolize(pc_two, /*activation=*/true);
  ASSERT_FALSE(got_two.empty());
  EXPECT_EQ(got_two, own) << describe(got_two) << "against\n" << describe(own);
  EXPECT_EQ(got_two.back().function, "getppid") << describe(got_two);
  EXPECT_EQ(got_two.back().pc, pc_two);
  ASSERT_EQ(got_one.size(), got_two.size());
  EXPECT_EQ(got_one.back().pc, pc_one);
  EXPECT_EQ(got_one.back().offset, got_two.back().offset);
}

}  // namespace
}  // namespace profctl
