// SPDX-License-Identifier: MIT
// The human all-thread dump of `profctl stack`: Go's debug=2 goroutine dump, for threads.
#pragma once

#include <ostream>

#include "report/capture.h"

namespace profctl {

// Writes every thread of `capture` in capture order, innermost frame first:
//
//   profctl stack: pid 4242 (/usr/bin/app) — 2 threads, world stopped 0.41 ms
//
//   thread 4242 "app" [sleeping, futex wait 0x7f3a2c0041a0, cpu 1.20s]:
//     #0  0x00007f3a2c0b1234 in __futex_abstimed_wait_common  (/usr/lib/libc.so.6+0x8a234)
//     #1  (inlined)          in helper()  at src/worker.h:10
//     #1  0x000055d0c0a01234 in Worker::run()  at src/worker.cpp:42  (/usr/bin/app+0x1234)
//
// An inlined call carries the number of the real frame it was inlined into (the next
// non-inlined line). Unknown functions print "??"; module+offset is always shown on real
// frames; "at file:line" only when the file is known.
void write_stack_text(const Capture& capture, std::ostream& out);

// "R" -> "running", "S" -> "sleeping", ...; an unknown letter is returned as it is.
std::string thread_state_name(const std::string& state);

}  // namespace profctl
