// SPDX-License-Identifier: MIT
// cxx_work FACTOR LOOPS: a C++ batch job with known shares, for gates by the names people
// type (`diff --fail-if 'cpu:acc_cpu_hot>...'`, tests/integration/sampling/diff_test.cpp). One
// thread runs LOOPS loops of
//   acc_cpu_hot(int)                5 * FACTOR units
//   work::Engine::step(long) const  3 units
//   a::helper()                     1 unit
//   b::helper()                     1 unit
// and exits. The reports print these names exactly so (the demangler's form); the two
// helper()s share a bare name on purpose. FACTOR 1: shares 50/30/10/10 %; FACTOR 3:
// 75/15/5/5 %. -fno-ipa-icf keeps the two identical helpers two functions.
#include <sys/prctl.h>

#include <csignal>
#include <cstdlib>

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
  const long loops = argc > 2 && std::atol(argv[2]) > 0 ? std::atol(argv[2]) : 1000;
  const work::Engine engine;
  for (long i = 0; i < loops; ++i) {
    acc_cpu_hot(factor);
    engine.step(3);
    a::helper();
    b::helper();
  }
  return 0;
}
