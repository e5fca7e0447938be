// SPDX-License-Identifier: MIT
// /proc readers. Everything here is untrusted input from the target: every parser checks
// bounds and returns an error (or nullopt) rather than trusting a field to be there.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "attach/thread_info.h"
#include "base/proc_maps.h"  // MapEntry, parse_maps, find_mapping
#include "base/result.h"

namespace profctl {

// One line of /proc/PID/maps.

// Fields of /proc/PID/task/TID/stat that profctl uses.
struct TaskStat {
  std::string comm;
  char state = '?';
  uint64_t flags = 0;  // PF_* (PF_KTHREAD = 0x00200000)
  uint64_t utime_ticks = 0;
  uint64_t stime_ticks = 0;
  int processor = -1;  // the CPU it runs on or last ran on (field 39); -1: not shown
};

// Fields of /proc/PID/status.
struct ProcStatus {
  char state = '?';
  pid_t tgid = 0;
  pid_t ppid = 0;
  pid_t tracer_pid = 0;
};

// Pure parsers (unit-tested on text).
std::optional<TaskStat> parse_stat(std::string_view text);
std::optional<ProcStatus> parse_status(std::string_view text);
std::optional<SyscallWait> parse_syscall(std::string_view text);  // nullopt: running / none
// Syscall name for an x86-64 syscall number ("futex", "read", ...), or "syscall_<nr>".
std::string syscall_name(long nr);

// Readers for a live process.
Result<std::vector<pid_t>> list_tasks(pid_t pid);
Result<TaskStat> read_task_stat(pid_t pid, pid_t tid);
Result<ProcStatus> read_status(pid_t pid);
std::optional<SyscallWait> read_task_syscall(pid_t pid, pid_t tid);
Result<std::string> read_maps_text(pid_t pid);
// The auxiliary vector entries of pid (/proc/PID/auxv) with these keys (AT_*): key -> value,
// a key absent from the vector absent from the map.
Result<std::map<uint64_t, uint64_t>> read_auxv(pid_t pid, std::initializer_list<uint64_t> keys);
std::string read_exe(pid_t pid);                   // "" when unreadable
std::vector<std::string> read_cmdline(pid_t pid);  // empty when unreadable
std::string read_comm(pid_t pid);                  // "" when unreadable
// CPU time a thread has run, in ns (/proc/PID/task/TID/schedstat: exact, unlike stat's ticks).
std::optional<uint64_t> read_task_runtime_ns(pid_t pid, pid_t tid);

// Clock ticks -> nanoseconds (sysconf(_SC_CLK_TCK)).
uint64_t ticks_to_ns(uint64_t ticks);

}  // namespace profctl
