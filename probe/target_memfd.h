// SPDX-License-Identifier: MIT
// The probes' shared memfd, taken from the target and proven before profctl touches it.
//
// The target creates the memfd (a remote memfd_create, so that it never needs access to
// profctl's files); profctl then needs the same file. A path reopen of /proc/PID/fd/N
// would open whatever the target's fd table holds at that moment: a process sharing that
// table (clone(CLONE_FILES), not a thread, so not stopped) can put any file there, and a
// root profctl would truncate and write it. So the file is taken with
// pidfd_getfd(pidfd_open(pid), N) (never a path; no fallback), and proven to be the memfd
// profctl asked for before anything sizes, maps or writes it:
//  - fstatfs f_type is TMPFS_MAGIC (shmem: not a disk file, not hugetlbfs);
//  - F_GETFL is O_RDWR and not O_PATH;
//  - a regular file with st_size 0 and st_nlink 0 (a memfd is never linked);
//  - F_GET_SEALS succeeds and reads 0: a memfd made with MFD_ALLOW_SEALING and not sealed
//    since (any other shmem file reads F_SEAL_SEAL);
//  - readlink(/proc/self/fd/N) is "/memfd:<name> (deleted)" with the per-session random
//    name profctl wrote into the target (random_memfd_name);
//  - st_uid is the target's filesystem uid (the memfd's owner is its creator's fsuid).
// A file that fails any of these is refused: nothing of it is changed. A memfd that passes
// can only be memory the target (or a process sharing its fd table) created: profctl
// sizing and mapping it touches nothing outside that memory. SharedArea::create then seals
// it against shrinking and growing, so no process can pull pages from under profctl's
// mapping (a SIGBUS in profctl).
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "base/fd.h"
#include "base/result.h"

namespace profctl::probe {

class SharedArea;
struct SharedAreaOptions;

// A memfd that passed the proof above. Only prove_fresh_memfd makes one.
class ProvenMemfd {
 public:
  ProvenMemfd(ProvenMemfd&&) noexcept = default;
  ProvenMemfd& operator=(ProvenMemfd&&) noexcept = default;
  int get() const { return fd_.get(); }
  Fd release() && { return std::move(fd_); }

 private:
  friend Result<ProvenMemfd> prove_fresh_memfd(Fd fd, std::string_view name, uid_t uid);
  explicit ProvenMemfd(Fd fd) : fd_(std::move(fd)) {}
  Fd fd_;
};

// "profctl-probe-" and 16 hex digits from getrandom: a name another process cannot guess
// before profctl writes it into the target.
std::string random_memfd_name();

// pidfd_open(pid) + pidfd_getfd(pidfd, target_fd): the file the target's fd table holds
// at target_fd, without a path. ENOSYS (a kernel before 5.6) is an error too: there is no
// fallback to /proc/PID/fd.
Result<Fd> take_target_fd(pid_t pid, int target_fd);

// The target's filesystem uid (the 4th field of "Uid:" in /proc/PID/status).
Result<uid_t> target_fsuid(pid_t pid);

// The proof (see the top of this file). `name` without the "memfd:" prefix. Takes the fd
// either way; on failure the error says which check failed and the file is untouched.
Result<ProvenMemfd> prove_fresh_memfd(Fd fd, std::string_view name, uid_t uid);

// All of the above and SharedArea::create on the proven memfd: what attach/'s install
// calls after its remote memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING) returned
// target_fd. A failed proof is an error saying the probes are refused.
Result<SharedArea> open_target_shared_area(pid_t pid, int target_fd, std::string_view name,
                                           const SharedAreaOptions& options);

}  // namespace profctl::probe
