// SPDX-License-Identifier: MIT
// Processes a test starts: a Child (a target with pipes, killed and reaped in its destructor) and
// run() (a command with captured stdout/stderr, an exit code and a timeout). Every pid here is one
// this test process forked; nothing is ever killed by name.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace profctl::testing {

using std::chrono::milliseconds;

struct RunResult {
  int exit_code = -1;      // WEXITSTATUS when the process exited, else -1
  int term_signal = 0;     // the signal that killed it, 0 if it exited
  bool timed_out = false;  // we killed it (SIGKILL, by pid) when the timeout passed
  std::string out;
  std::string err;
  milliseconds elapsed{0};

  // "exit 2 (stderr: ...)" for assertion messages.
  std::string describe() const;
};

struct RunOptions {
  milliseconds timeout{60000};
  std::optional<uid_t> uid;  // run as this uid/gid (needs root)
};

// fork + exec of argv[0] (a path, no PATH search) with fd `fd_map[i].first` at fd
// `fd_map[i].second` in the child (at most 16 entries); every other fd of ours is O_CLOEXEC.
// The child gets PR_SET_PDEATHSIG(SIGKILL): if the test process dies (a crash, a ctest
// timeout), its children die with it, and a child whose parent is already gone when it sets
// that (the getppid() check) exits at once. The signal follows the forking thread: call this
// from a thread that outlives the child. Throws on fork failure; every child process of the
// integration and sampling tests is started here.
pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::pair<int, int>>& fd_map,
            std::optional<uid_t> uid = std::nullopt);

// Runs argv[0] (a path, no PATH search) with stdin from /dev/null.
RunResult run(const std::vector<std::string>& argv, const RunOptions& options = {});

// A running target program. The constructor waits for nothing; call wait_ready(). The destructor
// sends SIGKILL to the pid and reaps it, whatever state the test left it in (stopped, traced).
class Child {
 public:
  struct Options {
    bool echo_pipe = false;  // give the child a pipe at fd 3 (its write end) to read events from
  };
  explicit Child(std::vector<std::string> argv, Options options);
  explicit Child(std::vector<std::string> argv) : Child(std::move(argv), Options{}) {}
  ~Child();
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  const std::string& exe() const { return argv_.front(); }
  const std::vector<std::string>& argv() const { return argv_; }
  // Read end of the fd-3 pipe (Options::echo_pipe), -1 otherwise.
  int echo_fd() const { return echo_read_; }

  // Next line from the child's stdout, without '\n'; nullopt on timeout or end of file.
  std::optional<std::string> read_line(milliseconds timeout = milliseconds(30000));
  // Waits for the line starting with "ready" and returns it (nullopt on timeout/EOF).
  std::optional<std::string> wait_ready(milliseconds timeout = milliseconds(60000));
  // Sends one command line and returns the reply line.
  std::optional<std::string> command(const std::string& line,
                                     milliseconds timeout = milliseconds(30000));
  // Reads exactly n bytes from the echo pipe; false on timeout/EOF.
  bool read_echo(size_t n, milliseconds timeout);
  // True while the process has not exited (waitpid WNOHANG; reaps it if it has).
  bool alive();
  // Exit status if the child has been reaped by alive().
  std::optional<int> wait_status() const { return status_; }

 private:
  std::vector<std::string> argv_;
  pid_t pid_ = -1;
  int stdin_write_ = -1;
  int stdout_read_ = -1;
  int echo_read_ = -1;
  std::string buffer_;
  std::optional<int> status_;
};

// "key=value key=value" words of a ready line (words without '=' are skipped).
std::map<std::string, std::string> parse_key_values(const std::string& line);

// Parses "0x..." or decimal.
unsigned long long parse_number(const std::string& text);

}  // namespace profctl::testing
