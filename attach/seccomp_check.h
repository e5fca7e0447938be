// SPDX-License-Identifier: MIT
// Whether the target's seccomp filters let a remote syscall through. profctl runs syscalls
// inside the target (StoppedWorld::syscall) to install its probes; under a filter that
// returns SECCOMP_RET_KILL_PROCESS for one of them the kernel kills the target with SIGSYS,
// so each call is first run through the calling thread's own filters, here, in a small
// classic-BPF interpreter that accepts exactly what the kernel's seccomp accepts.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace profctl {

// What a call needs of the filters: to run (profctl's remote syscalls), or only not to
// harm the thread (the probes' own calls, which cope with a failure: getpid, gettid,
// process_vm_readv/writev).
enum class SeccompNeed { kAllow, kSurvive };

// One syscall profctl is about to run in a target thread.
struct RemoteSyscall {
  long nr = 0;
  std::array<uint64_t, 6> args{};
  uint64_t ip = 0;  // the address after the `syscall` instruction (seccomp_data's)
};

using SeccompProgram = std::vector<sock_filter>;

// Runs one seccomp program on `call` as the kernel would (seccomp_data with
// AUDIT_ARCH_X86_64): the 32-bit value it returns. An Error when the program is one the
// kernel would not have accepted (unknown opcode, a jump or load out of range, a read of
// scratch memory never written, no final return, longer than BPF_MAXINSNS): its result is
// then unknown.
Result<uint32_t> run_seccomp_program(std::span<const sock_filter> program,
                                     const RemoteSyscall& call);

// The verdict of every filter of a thread on `call`: Ok when the most restrictive result
// (seccomp's precedence) is SECCOMP_RET_ALLOW or SECCOMP_RET_LOG; otherwise an Error saying
// what the kernel would do ("the target's seccomp filter would kill it for memfd_create
// (SECCOMP_RET_KILL_PROCESS)"), or when a filter cannot be evaluated. Filters newest first,
// as PTRACE_SECCOMP_GET_FILTER numbers them (of two equal actions the newest's data wins).
Result<void> seccomp_filters_allow(std::span<const SeccompProgram> filters,
                                   const RemoteSyscall& call,
                                   SeccompNeed need = SeccompNeed::kAllow);

// The thread's "Seccomp:" mode (0 none, 1 strict, 2 filter) and "Seccomp_filters:" count
// from the text of /proc/PID/task/TID/status; nullopt fields when a line is missing.
struct SeccompStatus {
  std::optional<int> mode;
  std::optional<size_t> filters;
};
SeccompStatus parse_seccomp_status(std::string_view status_text);
// True when the status text's "x86_Thread_features:" line names "shstk".
bool status_has_shadow_stack(std::string_view status_text);

// Ok when thread `tid` may run `call` without its seccomp filters interfering; an Error with
// a clear reason when they would not allow it, or when it cannot be known (profctl lacks
// CAP_SYS_ADMIN or runs under seccomp itself, the kernel cannot dump filters). `tid` must be
// a ptrace-stopped tracee of the calling thread (PTRACE_SECCOMP_GET_FILTER's rule).
Result<void> seccomp_allows(pid_t tid, const RemoteSyscall& call,
                            SeccompNeed need = SeccompNeed::kAllow);

// True when thread `tid` runs with a user-space shadow stack (x86 CET "shstk" in its
// /proc status); false when it does not or the status cannot be read.
bool thread_has_shadow_stack(pid_t tid);

}  // namespace profctl
