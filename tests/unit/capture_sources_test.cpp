// SPDX-License-Identifier: MIT
// The profile kinds' registry and what each kind asks of the session (capture/sources/).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "base/user_error.h"
#include "capture/capture_pipeline.h"
#include "capture/lock_names.h"
#include "capture/source_registry.h"

namespace profctl {
namespace {

std::vector<std::string> names(const std::vector<const ProfileSource*>& v) {
  std::vector<std::string> out;
  for (const ProfileSource* s : v) {
    out.emplace_back(s->name());
  }
  return out;
}

TEST(ProfileSources, TheRegistryListsEveryKindOnceInOrder) {
  EXPECT_EQ(names(profile_sources()),
            (std::vector<std::string>{"cpu", "wall", "threadcreate", "threads", "heap", "block",
                                      "mutex"}));
  EXPECT_EQ(profile_names(), "cpu,wall,threadcreate,threads,heap,block,mutex");
  for (const ProfileSource* s : profile_sources()) {
    EXPECT_EQ(find_profile_source(s->name()), s);
  }
  EXPECT_EQ(find_profile_source("goroutine"), nullptr);
}

TEST(ProfileSources, AListIsParsedInRegistryOrderEachKindOnce) {
  EXPECT_EQ(names(parse_profile_list("mutex,cpu,heap,cpu")),
            (std::vector<std::string>{"cpu", "heap", "mutex"}));
  EXPECT_EQ(names(parse_profile_list("all")), names(profile_sources()));
  EXPECT_EQ(names(parse_profile_list("wall,,")), (std::vector<std::string>{"wall"}));
}

TEST(ProfileSources, AnUnknownOrEmptyListIsAUsageErrorNamingTheKinds) {
  try {
    parse_profile_list("cpu,goroutine");
    FAIL() << "no error";
  } catch (const UserError& e) {
    EXPECT_EQ(e.code(), ExitCode::kUsage);
    EXPECT_NE(std::string(e.what()).find("goroutine"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("cpu,wall,threadcreate,threads,heap,block,mutex"), std::string::npos);
  }
  EXPECT_THROW(parse_profile_list(""), UserError);
  EXPECT_THROW(parse_profile_list(",,"), UserError);
}

TEST(ProfileSources, EachKindAsksTheSessionForWhatItConsumes) {
  CaptureSettings s;
  s.rate_hz = 50;
  s.cpu_timer = true;
  s.mem_rate = 4096;
  s.block_rate_ns = 777;
  s.mutex_fraction = 5;
  s.probe_stack_bytes = 8192;

  SessionPlan cpu = plan_session(parse_profile_list("cpu"), s);
  EXPECT_TRUE(cpu.ticks);
  EXPECT_TRUE(cpu.cpu_timer);
  EXPECT_TRUE(cpu.collector.cpu);
  EXPECT_FALSE(cpu.collector.wall);
  EXPECT_FALSE(cpu.any_probes());
  EXPECT_EQ(cpu.collector.period_ns, 20'000'000);

  SessionPlan wall = plan_session(parse_profile_list("wall"), s);
  EXPECT_TRUE(wall.ticks);
  // The CPU clocks run for a wall profile too: running threads' samples, with no stop.
  EXPECT_TRUE(wall.cpu_timer);
  EXPECT_EQ(wall.cpu_records, cpu.cpu_records);
  EXPECT_TRUE(wall.collector.wall);
  EXPECT_FALSE(wall.collector.cpu);

  // Thread creations are clone events: no ticks, no probes.
  SessionPlan tc = plan_session(parse_profile_list("threadcreate,threads"), s);
  EXPECT_FALSE(tc.ticks);
  EXPECT_TRUE(tc.collector.threadcreate);
  EXPECT_FALSE(tc.any_probes());

  SessionPlan heap = plan_session(parse_profile_list("heap"), s);
  EXPECT_FALSE(heap.ticks);
  EXPECT_TRUE(heap.probes.heap);
  EXPECT_FALSE(heap.probes.block || heap.probes.mutex);
  EXPECT_EQ(heap.probes.mem_rate, 4096);
  EXPECT_EQ(heap.probes.stack_bytes, 8192u);

  SessionPlan waits = plan_session(parse_profile_list("block,mutex"), s);
  EXPECT_TRUE(waits.probes.block && waits.probes.mutex);
  EXPECT_FALSE(waits.probes.heap);
  EXPECT_EQ(waits.probes.block_rate_ns, 777u);
  EXPECT_EQ(waits.probes.mutex_fraction, 5u);

  s.cpu_timer = false;  // PROFCTL_CPU_TICKS: the cpu profile from the ticks
  EXPECT_FALSE(plan_session(parse_profile_list("cpu,wall"), s).cpu_timer);
  EXPECT_FALSE(plan_session(parse_profile_list("wall"), s).cpu_timer);
}

TEST(ProfileSources, EachKindRecordsItsOwnSettings) {
  CaptureSettings s;
  s.mem_rate = 1;
  s.leak_age_ns = 5;
  s.block_rate_ns = 6;
  s.mutex_fraction = 7;
  std::map<std::string, std::string> o;
  for (const ProfileSource* src : parse_profile_list("cpu,wall,threadcreate,threads")) {
    src->describe(o, s);
  }
  EXPECT_TRUE(o.empty());
  for (const ProfileSource* src : parse_profile_list("heap,block,mutex")) {
    src->describe(o, s);
  }
  EXPECT_EQ(o, (std::map<std::string, std::string>{
                   {"mem_rate", "1"},
                   {"leak_age_ns", "5"},
                   {"block_rate_ns", "6"},
                   {"mutex_fraction", "7"},
                   {"probe_ring", "waits: a full ring holds the writer"}}));
  s.probe_lossy = true;
  parse_profile_list("heap").front()->describe(o, s);
  EXPECT_EQ(o["probe_ring"], "lossy: a full ring drops records");
}

TEST(LockNames, TheAllocatorIsKnownByItsFunctionNames) {
  for (const char* f : {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc",
                        "operator new(unsigned long)", "operator new[](unsigned long)",
                        "operator new(unsigned long, std::align_val_t)",
                        "std::__new_allocator<int>::allocate(unsigned long, void const*)",
                        "std::allocator_traits<std::allocator<int> >::allocate", "mallocx",
                        "tc_malloc", "mi_malloc", "mi_zalloc", "mi_mallocn"}) {
    EXPECT_TRUE(is_allocator_function(f)) << f;
  }
  for (const char* f : {"make_shared_lock", "main", "mallocish", "new_connection",
                        "std::vector<int>::push_back(int const&)", "operator delete(void*)"}) {
    EXPECT_FALSE(is_allocator_function(f)) << f;
  }
}

}  // namespace
}  // namespace profctl
