// SPDX-License-Identifier: MIT
#include "process.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace profctl::testing {
namespace {

using Clock = std::chrono::steady_clock;

struct Pipe {
  int read = -1;
  int write = -1;
};

Pipe make_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    throw std::runtime_error(std::string("pipe2: ") + std::strerror(errno));
  }
  return {fds[0], fds[1]};
}

void close_fd(int& fd) {
  if (fd >= 0) {
    ::close(fd);
    fd = -1;
  }
}

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

}  // namespace

// Between fork and exec only async-signal-safe calls (the test process has threads).
pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::pair<int, int>>& map,
            std::optional<uid_t> uid) {
  const pid_t parent = ::getpid();
  std::vector<char*> args;
  for (const auto& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) {
    throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  }
  if (pid == 0) {
    // Move sources out of the way first, so that no dup2 clobbers a source not yet used.
    int moved[16];
    size_t n = map.size() < 16 ? map.size() : 16;
    for (size_t i = 0; i < n; ++i) {
      moved[i] = ::fcntl(map[i].first, F_DUPFD_CLOEXEC, 100);
      if (moved[i] < 0) {
        ::_exit(126);
      }
    }
    for (size_t i = 0; i < n; ++i) {
      if (::dup2(moved[i], map[i].second) < 0) {  // dup2 clears FD_CLOEXEC on the new fd
        ::_exit(126);
      }
    }
    ::signal(SIGPIPE, SIG_DFL);
    // If the test runner dies (crash, ctest timeout), its children die with it. Targets also exit
    // at EOF on stdin; this covers a stopped or traced one.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) {  // the parent died before the prctl: no signal will come
      ::_exit(126);
    }
    if (uid) {
      gid_t gid = *uid;
      if (::setgroups(0, nullptr) != 0 || ::setgid(gid) != 0 || ::setuid(*uid) != 0) {
        ::_exit(126);
      }
    }
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

std::string RunResult::describe() const {
  std::ostringstream s;
  if (timed_out) {
    s << "TIMED OUT after " << elapsed.count() << " ms";
  } else if (term_signal != 0) {
    s << "killed by signal " << term_signal;
  } else {
    s << "exit " << exit_code;
  }
  s << "\n--- stderr ---\n"
    << err << "--- stdout (" << out.size() << " bytes) ---\n"
    << out.substr(0, 2000);
  return s.str();
}

RunResult run(const std::vector<std::string>& argv, const RunOptions& options) {
  RunResult result;
  Pipe out = make_pipe();
  Pipe err = make_pipe();
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  auto start = Clock::now();
  pid_t pid = spawn(argv, {{null_fd, 0}, {out.write, 1}, {err.write, 2}}, options.uid);
  close_fd(null_fd);
  close_fd(out.write);
  close_fd(err.write);

  auto deadline = start + options.timeout;
  int fds[2] = {out.read, err.read};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_count = 2;
  while (open_count > 0) {
    struct pollfd pfd[2];
    int n = 0;
    int which[2];
    for (int i = 0; i < 2; ++i) {
      if (fds[i] >= 0) {
        pfd[n] = {fds[i], POLLIN, 0};
        which[n++] = i;
      }
    }
    int r = ::poll(pfd, n, remaining_ms(deadline));
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      result.timed_out = true;
      break;
    }
    for (int k = 0; k < n; ++k) {
      if (pfd[k].revents == 0) {
        continue;
      }
      char buf[65536];
      ssize_t got = ::read(pfd[k].fd, buf, sizeof buf);
      if (got > 0) {
        sinks[which[k]]->append(buf, static_cast<size_t>(got));
      } else if (got == 0 || errno != EINTR) {
        close_fd(fds[which[k]]);
        --open_count;
      }
    }
  }
  // Both pipes are closed (or the deadline passed): reap, and kill by pid if it is still running
  // at the deadline (a process that closed its output but hangs).
  int status = 0;
  for (;;) {
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid || (w < 0 && errno != EINTR)) {
      break;
    }
    if (w == 0 && (result.timed_out || remaining_ms(deadline) == 0)) {
      result.timed_out = true;
      ::kill(pid, SIGKILL);  // our own unreaped child: the pid cannot have been reused
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    ::usleep(1000);
  }
  close_fd(fds[0]);
  close_fd(fds[1]);
  result.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.term_signal = WTERMSIG(status);
  }
  return result;
}

Child::Child(std::vector<std::string> argv, Options options) : argv_(std::move(argv)) {
  Pipe in = make_pipe();
  Pipe out = make_pipe();
  Pipe echo;
  std::vector<std::pair<int, int>> map = {{in.read, 0}, {out.write, 1}};
  if (options.echo_pipe) {
    echo = make_pipe();
    map.push_back({echo.write, 3});
  }
  pid_ = spawn(argv_, map, std::nullopt);
  close_fd(in.read);
  close_fd(out.write);
  close_fd(echo.write);
  stdin_write_ = in.write;
  stdout_read_ = out.read;
  echo_read_ = echo.read;
}

Child::~Child() {
  if (pid_ > 0 && !status_) {
    ::kill(pid_, SIGKILL);  // our own unreaped child: the pid is still ours
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
  close_fd(stdin_write_);
  close_fd(stdout_read_);
  close_fd(echo_read_);
}

std::optional<std::string> Child::read_line(milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    struct pollfd pfd = {stdout_read_, POLLIN, 0};
    int r = ::poll(&pfd, 1, remaining_ms(deadline));
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      return std::nullopt;
    }
    char buf[4096];
    ssize_t got = ::read(stdout_read_, buf, sizeof buf);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got <= 0) {
      return std::nullopt;
    }
    buffer_.append(buf, static_cast<size_t>(got));
  }
}

std::optional<std::string> Child::wait_ready(milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  for (;;) {
    auto line = read_line(milliseconds(remaining_ms(deadline)));
    if (!line || line->rfind("ready", 0) == 0) {
      return line;
    }
  }
}

std::optional<std::string> Child::command(const std::string& line, milliseconds timeout) {
  std::string text = line + "\n";
  if (::write(stdin_write_, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return std::nullopt;
  }
  return read_line(timeout);
}

bool Child::read_echo(size_t n, milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (n > 0) {
    struct pollfd pfd = {echo_read_, POLLIN, 0};
    int r = ::poll(&pfd, 1, remaining_ms(deadline));
    if (r < 0 && errno == EINTR) {
      continue;
    }
    if (r <= 0) {
      return false;
    }
    char buf[256];
    ssize_t got = ::read(echo_read_, buf, n < sizeof buf ? n : sizeof buf);
    if (got < 0 && errno == EINTR) {
      continue;
    }
    if (got <= 0) {
      return false;
    }
    n -= static_cast<size_t>(got);
  }
  return true;
}

bool Child::alive() {
  if (status_) {
    return false;
  }
  int status = 0;
  pid_t w = ::waitpid(pid_, &status, WNOHANG);
  if (w == pid_) {
    status_ = status;
    return false;
  }
  return true;
}

std::map<std::string, std::string> parse_key_values(const std::string& line) {
  std::map<std::string, std::string> kv;
  std::istringstream words(line);
  std::string word;
  while (words >> word) {
    auto eq = word.find('=');
    if (eq != std::string::npos) {
      kv[word.substr(0, eq)] = word.substr(eq + 1);
    }
  }
  return kv;
}

unsigned long long parse_number(const std::string& text) { return std::stoull(text, nullptr, 0); }

}  // namespace profctl::testing
