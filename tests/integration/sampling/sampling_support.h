// SPDX-License-Identifier: MIT
// What the sampling tests need beyond tests/integration/support (process spawning and /proc
// readers live there): profctl running in the background
// (attach until SIGINT, run with a target that talks on stdout), temporary directories, polling
// with a deadline, and reading the profiles of a capture (JSON and pprof).
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "support/capture.h"
#include "support/process.h"
#include "tests/common/go_tool.h"

namespace profctl::testing::sampling {

// A process started by the test (spawn(), support/process.h) with stdin and stdout on pipes and
// stderr in an unlinked temporary file. The destructor sends SIGKILL to the pid (our own
// unreaped child) and reaps it.
class BgProcess {
 public:
  explicit BgProcess(std::vector<std::string> argv);
  ~BgProcess();
  BgProcess(const BgProcess&) = delete;
  BgProcess& operator=(const BgProcess&) = delete;

  pid_t pid() const { return pid_; }
  // Next stdout line without '\n'; nullopt on timeout or end of file.
  std::optional<std::string> read_line(milliseconds timeout = milliseconds(30000));
  // Reads lines until one starts with `prefix`; returns it (nullopt on timeout/EOF).
  std::optional<std::string> read_until(const std::string& prefix,
                                        milliseconds timeout = milliseconds(30000));
  bool send_line(const std::string& line);
  // kill(pid, sig) while the process has not been reaped; false otherwise.
  bool signal(int sig);
  // Waits (polling, with a deadline) for the exit; the raw wait status, nullopt on timeout.
  std::optional<int> wait_exit(milliseconds timeout);
  bool exited() const { return status_.has_value(); }
  // "exit 3", "killed by signal 9", "still running".
  std::string describe_status() const;
  // Everything written to stderr so far.
  std::string err() const;
  // Every stdout line read so far (read_line/read_until), joined by '\n'.
  const std::string& seen_out() const { return seen_; }

 private:
  pid_t pid_ = -1;
  int stdin_write_ = -1;
  int stdout_read_ = -1;
  int stderr_fd_ = -1;
  std::string buffer_;
  std::string seen_;
  std::optional<int> status_;
};

// Exit code of a wait status: WEXITSTATUS, or -1 when killed by a signal.
int exit_code_of(int status);

// A fresh directory under /tmp, removed with its contents in the destructor.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Polls `done` every `interval` until it returns true or `timeout` passes; returns its last value.
bool wait_until(const std::function<bool()>& done, milliseconds timeout,
                milliseconds interval = milliseconds(2));

// TracerPid of the process's main thread (-1 when gone).
pid_t tracer_of(pid_t pid);
// Polls until pid is traced (TracerPid != 0, 1 ms steps); false on timeout.
bool wait_traced(pid_t pid, milliseconds timeout = milliseconds(30000));
// Polls until pid is no longer traced (TracerPid 0 or gone); false on timeout.
bool wait_untraced(pid_t pid, milliseconds timeout = milliseconds(60000));
// True when /proc/PID/status SigCgt has `sig`: the process has a handler for it.
bool catches(pid_t pid, int sig);
// argv of `profctl attach PID ARGS...` / `profctl run ARGS... -- COMMAND...`.
std::vector<std::string> attach_argv(pid_t pid, const std::vector<std::string>& args);
std::vector<std::string> run_argv(const std::vector<std::string>& args,
                                  const std::vector<std::string>& command);
// Main-thread name of a program as the kernel sets it at exec: the file name, cut to 15 bytes.
std::string comm_of_exe(const std::string& path);
// "tid state comm wchan syscall-nr; ..." for every thread of pid, for failure messages.
std::string describe_tasks(pid_t pid);
// Sum of the first field of /proc/PID/task/*/schedstat (ns of CPU of the live threads).
long long process_cpu_ns(pid_t pid);

std::optional<std::string> read_text(const std::string& path);
bool write_text(const std::string& path, const std::string& text);

// The profile `kind` of a capture, or nullptr.
const Json* profile_of(const Json& capture, const std::string& kind);
// The index of sample type `type` in the profile ("cpu", "wall", "samples", ...), or -1.
int value_index(const Json& profile, const std::string& type);
// True when one of the sample's frames has function == `function`.
bool has_function(const Json& sample, const std::string& function);
// The whole stack of a sample from `outer.front()` outwards is exactly `outer` (function
// names; an entry "clone*" matches any name that starts with "clone" or "__clone", as glibc
// names its thread entry clone3 or __clone3), and whatever is inside outer.front() is only
// frames of libc, ld.so or the vdso, or inlined frames: a truncated stack (an unwinder that
// stops early) or a stack with frames missing or misplaced fails. Without `outer.front()`
// in the stack, fails too.
::testing::AssertionResult stack_ends_with(const Json& sample,
                                           const std::vector<std::string>& outer);
// The whole stack of a sample, innermost frame first, is exactly `stack`: every frame
// (inlined ones too) by function name, "clone*" as above. For stacks the target makes
// entirely known, e.g. a heap sample's: the allocator's entry, where the probe stops, then
// the target's own functions and its thread's root.
::testing::AssertionResult stack_is(const Json& sample, const std::vector<std::string>& stack);
// The outer frames of every thread created by pthread_create, and of the main thread.
std::vector<std::string> thread_root();
std::vector<std::string> main_root();
// `functions` then `root`: {"spin_loop", "spinner_main"} + thread_root().
std::vector<std::string> then(std::vector<std::string> functions,
                              const std::vector<std::string>& root);
// The label (a string) or "" when missing.
std::string label(const Json& sample, const std::string& key);
// Sum of values[index] over the samples that pass `keep` (all when keep is empty).
long long sum_values(const Json& profile, int index,
                     const std::function<bool(const Json&)>& keep = {});
// Totals per sample type, "type/unit" -> sum.
std::map<std::string, long long> totals(const Json& profile);
// "tid=.. thread_name=.. | f1 < f2 < ..." per sample (at most `max` samples), for messages.
std::string describe_samples(const Json& profile, size_t max = 20);

// Parses DIR/capture.json; records a failure and returns nullopt when it is missing or not JSON.
std::optional<Json> load_capture(const std::string& dir);

// The checks every output directory gets: capture.json valid against the schema, and every
// <kind>.pb.gz accepted by `go tool pprof -raw` with the same totals as the JSON profile.
// When `expect_functions` is given, pprof's output for that kind must name each function.
::testing::AssertionResult outputs_valid(
    const std::string& dir,
    const std::map<std::string, std::vector<std::string>>& expect_functions = {});

// The probe-driven profiles (heap, block, mutex). profctl runs with -v: it says when the
// probes are in (the install itself runs remote syscalls in a stopped thread; a SIGKILL of
// profctl in those few milliseconds is the one moment it cannot make safe, see the man page).
bool probes_in(pid_t pid);  // a profctl-probe mapping is in the target
void start_and_wait_for_probes(Child& target, BgProcess& p);
// SIGINT, SIGTERM and SIGHUP all end a capture the same way: detach, restore, write; exit 0.
void end_with_signal(BgProcess& p, int sig);
inline void end_with_sigint(BgProcess& p) { end_with_signal(p, SIGINT); }

// `go tool pprof ARGS...` (HOME and GOCACHE in a temporary directory); nullopt when go is
// missing, which callers report as a failure (kNoGo, tests/common/go_tool.h).
std::optional<RunResult> go_pprof(const std::vector<std::string>& args);
// `go tool pprof -raw FILE`.
std::optional<RunResult> pprof_raw(const std::string& file);
// Totals of the "Samples:" section of `pprof -raw` output, "type/unit" -> sum.
std::map<std::string, long long> pprof_raw_totals(const std::string& raw);
// A gzip stream's bytes; nullopt when it is not one, or is cut short.
std::optional<std::string> gunzip(const std::string& in);
// The comments of a .pb.gz profctl wrote, in order; nullopt (and a test failure) when it
// cannot be read or decoded.
std::optional<std::vector<std::string>> pprof_comments(const std::string& file);

}  // namespace profctl::testing::sampling
