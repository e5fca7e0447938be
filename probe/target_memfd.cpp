// SPDX-License-Identifier: MIT
#include "probe/target_memfd.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "probe/shared_area.h"

namespace profctl::probe {
namespace {

Error refused(int fd, const std::string& why) {
  return Error{"the probes' memfd (fd " + std::to_string(fd) +
                   " in the target) is not the one profctl asked for: " + why +
                   "; probes refused, nothing of that file was changed",
               0};
}

}  // namespace

std::string random_memfd_name() {
  std::array<unsigned char, 8> bytes{};
  size_t got = 0;
  while (got < bytes.size()) {
    ssize_t n = getrandom(bytes.data() + got, bytes.size() - got, 0);
    if (n > 0) {
      got += static_cast<size_t>(n);
    } else if (errno != EINTR) {
      break;  // cannot happen on Linux >= 3.17 with a buffer this small; see below
    }
  }
  char hex[2 * bytes.size() + 1] = {};
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::snprintf(hex + 2 * i, 3, "%02x", bytes[i]);
  }
  // Should getrandom fail, the name is still unique to this session: the proof's other
  // checks (a fresh, unsealed, empty memfd of the target's uid) do not depend on secrecy.
  if (got < bytes.size()) {
    std::snprintf(hex, sizeof hex, "%08x%08x", static_cast<unsigned>(getpid()),
                  static_cast<unsigned>(gettid()));
  }
  return std::string("profctl-probe-") + hex;
}

Result<Fd> take_target_fd(pid_t pid, int target_fd) {
  Fd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd.valid()) {
    if (errno == ENOSYS) {
      return Error{
          "pidfd_open is not available (Linux 5.6 or later is needed to take the "
          "probes' memfd from the target safely); probes refused",
          0};
    }
    return errno_error("pidfd_open " + std::to_string(pid));
  }
  Fd fd(static_cast<int>(syscall(SYS_pidfd_getfd, pidfd.get(), target_fd, 0)));
  if (!fd.valid()) {
    if (errno == ENOSYS) {
      return Error{
          "pidfd_getfd is not available (Linux 5.6 or later is needed to take the "
          "probes' memfd from the target safely); probes refused",
          0};
    }
    return errno_error("pidfd_getfd of fd " + std::to_string(target_fd) + " of pid " +
                       std::to_string(pid));
  }
  return fd;
}

Result<uid_t> target_fsuid(pid_t pid) {
  auto text = read_file("/proc/" + std::to_string(pid) + "/status");
  if (!text) {
    return text.error();
  }
  std::istringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Uid:", 0) != 0) {
      continue;
    }
    std::istringstream fields(line.substr(4));
    uid_t ids[4] = {};
    if (fields >> ids[0] >> ids[1] >> ids[2] >> ids[3]) {
      return ids[3];
    }
    break;
  }
  return Error{"no Uid line in /proc/" + std::to_string(pid) + "/status", 0};
}

Result<ProvenMemfd> prove_fresh_memfd(Fd fd, std::string_view name, uid_t uid) {
  const int n = fd.get();
  // O_PATH first: an O_PATH fd answers fstat and fstatfs like the file it names.
  const int fl = fcntl(n, F_GETFL);
  if (fl < 0) {
    return refused(n, std::string("F_GETFL failed: ") + strerror(errno));
  }
  if ((fl & O_PATH) != 0 || (fl & O_ACCMODE) != O_RDWR) {
    return refused(n, (fl & O_PATH) != 0 ? "it is an O_PATH descriptor" : "it is not open O_RDWR");
  }
  struct statfs sfs {};
  if (fstatfs(n, &sfs) != 0) {
    return refused(n, std::string("fstatfs failed: ") + strerror(errno));
  }
  if (static_cast<unsigned long>(sfs.f_type) != TMPFS_MAGIC) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "its file system is 0x%lx, not shmem",
                  static_cast<unsigned long>(sfs.f_type));
    return refused(n, buf);
  }
  struct stat st {};
  if (fstat(n, &st) != 0) {
    return refused(n, std::string("fstat failed: ") + strerror(errno));
  }
  if (!S_ISREG(st.st_mode)) {
    return refused(n, "it is not a regular file");
  }
  if (st.st_nlink != 0) {
    return refused(n,
                   "it has a name in a file system (st_nlink " + std::to_string(st.st_nlink) + ")");
  }
  if (st.st_size != 0) {
    return refused(n, "it is not empty (" + std::to_string(st.st_size) + " bytes)");
  }
  if (st.st_uid != uid) {
    return refused(n, "it belongs to uid " + std::to_string(st.st_uid) + ", the target is uid " +
                          std::to_string(uid));
  }
  const int seals = fcntl(n, F_GET_SEALS);
  if (seals < 0) {
    return refused(n, "it is not a memfd (F_GET_SEALS: " + std::string(strerror(errno)) + ")");
  }
  if (seals != 0) {
    char buf[96];
    std::snprintf(buf, sizeof buf,
                  "it is sealed (seals 0x%x), not a fresh memfd made with "
                  "MFD_ALLOW_SEALING",
                  static_cast<unsigned>(seals));
    return refused(n, buf);
  }
  std::array<char, 256> link{};
  const std::string self = "/proc/self/fd/" + std::to_string(n);
  const ssize_t len = readlink(self.c_str(), link.data(), link.size());
  if (len < 0) {
    return refused(n, "readlink " + self + ": " + strerror(errno));
  }
  const std::string want = "/memfd:" + std::string(name) + " (deleted)";
  if (std::string_view(link.data(), static_cast<size_t>(len)) != want) {
    return refused(n, "it is named '" + std::string(link.data(), static_cast<size_t>(len)) +
                          "', not '" + want + "'");
  }
  return ProvenMemfd(std::move(fd));
}

Result<SharedArea> open_target_shared_area(pid_t pid, int target_fd, std::string_view name,
                                           const SharedAreaOptions& options) {
  auto uid = target_fsuid(pid);
  if (!uid) {
    return uid.error();
  }
  auto fd = take_target_fd(pid, target_fd);
  if (!fd) {
    return fd.error();
  }
  auto proven = prove_fresh_memfd(std::move(*fd), name, *uid);
  if (!proven) {
    return proven.error();
  }
  return SharedArea::create(options, std::move(*proven));
}

}  // namespace profctl::probe
