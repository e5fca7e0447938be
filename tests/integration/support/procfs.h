// SPDX-License-Identifier: MIT
// What /proc says about a target, read by the test independently of profctl: thread list, states,
// tracer, the syscall a thread is blocked in.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace profctl::testing {

std::vector<pid_t> task_ids(pid_t pid);
// State letter from /proc/PID/task/TID/stat ('?' if unreadable).
char task_state(pid_t pid, pid_t tid);
char process_state(pid_t pid);
// TracerPid from /proc/PID/task/TID/status (-1 if unreadable).
pid_t tracer_pid(pid_t pid, pid_t tid);
std::string task_comm(pid_t pid, pid_t tid);
// Time on CPU in ns, first field of /proc/PID/task/TID/schedstat (-1 if unreadable).
long long task_cpu_ns(pid_t pid, pid_t tid);
// The stat "flags" field (PF_KTHREAD = 0x00200000).
std::optional<unsigned long> process_flags(pid_t pid);

struct BlockedSyscall {
  long nr = -1;
  unsigned long long args[6] = {};
};
// /proc/PID/task/TID/syscall; nullopt when running or unreadable.
std::optional<BlockedSyscall> blocked_syscall(pid_t pid, pid_t tid);

// The target is as a tracer must leave it: every thread's TracerPid == expected_tracer (0: not
// traced) and no thread in state 't' (ptrace stop); 'T' only if allow_group_stop.
::testing::AssertionResult untouched(pid_t pid, pid_t expected_tracer = 0,
                                     bool allow_group_stop = false);

// Polls until every thread of pid is in state `state` (or the timeout passes).
bool wait_all_tasks_in_state(pid_t pid, char state, std::chrono::milliseconds timeout);

}  // namespace profctl::testing
