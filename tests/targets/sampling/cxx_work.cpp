// SPDX-License-Identifier: MIT
// cxx_work FACTOR CPU_MS: a C++ batch job with known shares, for gates by the names people
// type (`diff --fail-if 'cpu:acc_cpu_hot>...'`, tests/integration/sampling/diff_names_test.cpp).
// One thread runs whole loops of
//   acc_cpu_hot(int)                5 * FACTOR units
//   work::Engine::step(long) const  3 units
//   a::helper()                     1 unit
//   b::helper()                     1 unit
// until it has used CPU_MS of CPU time, then exits. A fixed CPU time rather than a fixed
// number of loops: a unit's cost varies threefold between machines (and runs), and the test's
// precision rests on the number of samples, which a fixed CPU time fixes. The reports print these
// names exactly so (the demangler's form); the two helper()s share a bare name on purpose. FACTOR
// 1: shares 50/30/10/10 %; FACTOR 3: 75/15/5/5 %. -fno-ipa-icf keeps the two identical helpers two
// functions.
#include <sys/prctl.h>

#include <csignal>
#include <cstdlib>
#include <ctime>

// As ../target_util.h (a C header) defines them: no clones, no tail calls.
#define NOINLINE __attribute__((noinline, noclone))
#define KEEP_FRAME() asm volatile("" ::: "memory")

namespace {
volatile unsigned long sink;

NOINLINE void unit() {
  for (int i = 0; i < 20000; ++i) {
    sink = sink + static_cast<unsigned long>(i) * 7u;
  }
  KEEP_FRAME();
}
}  // namespace

NOINLINE void acc_cpu_hot(int factor) {
  for (int i = 0; i < 5 * factor; ++i) {
    unit();
  }
  KEEP_FRAME();
}

namespace work {
struct Engine {
  NOINLINE void step(long units) const;
};
NOINLINE void Engine::step(long units) const {
  for (long i = 0; i < units; ++i) {
    unit();
  }
  KEEP_FRAME();
}
}  // namespace work

namespace a {
NOINLINE void helper() {
  unit();
  KEEP_FRAME();
}
}  // namespace a
namespace b {
NOINLINE void helper() {
  unit();
  sink = sink + 1;
  KEEP_FRAME();
}
}  // namespace b

int main(int argc, char** argv) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlives the test or profctl
  const int factor = argc > 1 && std::atoi(argv[1]) > 0 ? std::atoi(argv[1]) : 1;
  const long cpu_ms = argc > 2 && std::atol(argv[2]) > 0 ? std::atol(argv[2]) : 1000;
  const work::Engine engine;
  for (;;) {
    // A loop is 10 units or more (~70-160 us), so a clock read every 8 loops costs
    // well under 1% and the shares stay those of whole loops.
    for (int i = 0; i < 8; ++i) {
      acc_cpu_hot(factor);
      engine.step(3);
      a::helper();
      b::helper();
    }
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    if (ts.tv_sec * 1000L + ts.tv_nsec / 1000000L >= cpu_ms) {
      return 0;
    }
  }
}
