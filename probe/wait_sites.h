// SPDX-License-Identifier: MIT
// Where a futex-based wait can be timed in glibc, found by reading code rather than names.
//
// On Debian's glibc every blocking wait funnels through a few functions that are internal
// (__lll_lock_wait for contended mutexes, __futex_abstimed_wait_common for condition
// variables, semaphores, join and rwlocks), as does every cancellation (__pthread_unwind):
// their names are only in the libc6-dbg debug file. Without it, they are found from exported entry
// points that call them: the callee (one direct call or jump away, through a wrapper that only
// jumps) whose own code issues the futex system call.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <set>
#include <span>
#include <vector>

namespace profctl::probe {

// Reads up to `len` bytes of target code at `address` (fewer at the end of a mapping).
using ReadCode = std::function<std::vector<uint8_t>(uint64_t address, size_t len)>;
// The length of the function that starts at `address` (up to the next function start the
// module's CFI lists), or 0 when unknown: then a fixed window is read, which may run into
// the next function.
using FunctionLength = std::function<uint64_t(uint64_t address)>;

// True when `code` (at `address`) holds a `syscall` with eax = SYS_futex set by a
// `mov eax, 202` a few instructions before it, within its first `window` bytes.
bool issues_futex_syscall(std::span<const uint8_t> code);

// The first direct call (or tail jump) target of the function [entry, entry + size) that
// issues the futex syscall itself, or after at most one jump-only wrapper, skipping the
// addresses in `exclude`. nullopt when there is none.
std::optional<uint64_t> futex_callee(uint64_t entry, uint64_t size, const ReadCode& read,
                                     const std::set<uint64_t>& exclude = {},
                                     const FunctionLength& length = {});

// The function a short forwarding function [entry, entry + size) calls or tail-jumps to
// within its first few instructions, before any conditional branch or return: glibc's
// exported __pthread_unwind_next loads one field of its argument and calls the internal
// __pthread_unwind. With `length`, the callee must be a function start the module's CFI
// lists. nullopt when there is none.
std::optional<uint64_t> forwarded_callee(uint64_t entry, uint64_t size, const ReadCode& read,
                                         const FunctionLength& length = {});

// A FunctionLength from sorted function starts (process addresses).
FunctionLength lengths_from_starts(std::vector<uint64_t> starts);

}  // namespace profctl::probe
