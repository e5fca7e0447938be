// SPDX-License-Identifier: MIT
// TracedProcess: every thread of a target seized with PTRACE_SEIZE (never
// PTRACE_O_EXITKILL: a crash of profctl must not kill a production process), stopped
// together on demand, captured, and resumed at once. The destructor leaves every thread
// detached and running (or group-stopped, as it was found), with every signal that arrived
// meanwhile re-delivered.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

#include "attach/proc.h"
#include "attach/snapshot.h"
#include "attach/thread_info.h"
#include "attach/thread_table.h"
#include "attach/trace_event.h"
#include "attach/trace_observer.h"
#include "attach/wait_queue.h"
#include "attach/waiter.h"
#include "base/result.h"

namespace profctl {

// Why a target cannot be attached; cli maps every kind to exit code 2.
enum class AttachFailure {
  kNoSuchProcess,
  kKernelThread,
  kZombie,
  kAlreadyTraced,
  kPermission,
  kSelf,
  kOther
};

struct AttachError {
  AttachFailure kind = AttachFailure::kOther;
  std::string message;  // one line: what is wrong
  std::string hint;     // what to do about it (may be empty)
};

struct CaptureOptions {
  // Upper bound of the stack copied per thread. Only the used part of a stack is copied
  // (from rsp up to the end of its mapping), so a large bound costs nothing on shallow
  // stacks; the default covers the default 8 MiB stack rlimit.
  size_t stack_bytes = 8u << 20;
  std::set<pid_t> only_tids;  // empty: every thread
  bool detach = true;         // resume by detaching (one-shot `stack`) or by PTRACE_CONT
  // How long to wait for a thread to reach its stop before giving up on it (a thread in
  // uninterruptible sleep stops only when the kernel lets it).
  std::chrono::milliseconds stop_timeout{1000};
};

struct ThreadCapture {
  ThreadInfo info;               // from /proc, read before the stop
  std::optional<Snapshot> snap;  // nullopt: the thread could not be stopped or read
  std::string note;              // why there is no snapshot
};

struct PauseTimes {
  uint64_t world_stopped_ns = 0;  // first PTRACE_INTERRUPT to last resume
  uint64_t stop_ns = 0;           // interrupting and collecting every stop
  uint64_t capture_ns = 0;        // registers and stack copies
  uint64_t resume_ns = 0;         // resuming (or detaching) every thread
  uint64_t stack_bytes = 0;       // bytes copied in all
};

struct WorldCapture {
  std::vector<ThreadCapture> threads;  // sorted by tid
  PauseTimes pause;
  std::string maps_text;           // /proc/PID/maps just before the stop
  std::vector<std::string> notes;  // events worth a line in the report
};

class Fd;
class StackReader;
class StoppedWorld;

// Every thread of one traced process and what ptrace requires of it. Its waits go through
// the capture's one WaitQueue (its own while it is alone, a ProcessTree's while one follows
// it); what others want to hear of it goes through TraceObservers.
class TracedProcess {
 public:
  using TraceEvent = ::profctl::TraceEvent;
  ~TracedProcess();
  TracedProcess(const TracedProcess&) = delete;
  TracedProcess& operator=(const TracedProcess&) = delete;

  // Checks that `pid` can be traced (exists, not a kernel thread, not a zombie, not
  // traced already) and seizes every thread, re-listing /proc/PID/task until no new
  // thread appears. Nothing is stopped yet. `trace_forks` false: the processes it creates
  // are not seized at birth (for a capture that neither follows them nor puts anything of
  // its own in the target's memory for them to inherit); each would otherwise cost it
  // three stops (its fork event, the child's first stop, its detach).
  static std::variant<std::unique_ptr<TracedProcess>, AttachError> seize(pid_t pid,
                                                                         bool trace_forks = true);

  // Stops every thread, reads registers and stacks, resumes (or detaches) every thread at
  // once. Thread states and syscalls are read from /proc before the stop.
  Result<WorldCapture> capture_world(const CaptureOptions& opts);

  // Stops every thread and returns a scope in which their registers and the target's
  // memory can be read and written and syscalls run in the target; every thread resumes
  // when it ends. The same stop path as capture_world.
  Result<std::unique_ptr<StoppedWorld>> stop_world(
      std::chrono::milliseconds timeout = std::chrono::milliseconds(1000));

  pid_t pid() const { return pid_; }
  // A live thread's id, for /proc/ID/maps, /proc/ID/mem and process_vm_readv: the leader
  // once it has exited (pthread_exit from main) has no memory map to read.
  pid_t space_pid() const;
  size_t thread_count() const { return table_.size(); }
  // True while the thread is in a job-control stop profctl keeps it in (PTRACE_LISTEN):
  // /proc shows 't' for it as for a ptrace stop of profctl's own.
  bool job_stopped(pid_t tid) const {
    const TracedThread* t = table_.find(tid);
    return t != nullptr && (t->state == TState::kListening || t->group_stop);
  }
  std::vector<pid_t> tids() const { return table_.tids(); }
  bool has_thread(pid_t tid) const { return table_.find(tid) != nullptr; }
  // Which address space the snapshots of this process belong to: it changes at exec, and a
  // forked child keeps its parent's (same mappings) until it execs. Stamped on every
  // Snapshot (Snapshot::space) so that each is unwound and symbolized with its own modules.
  uint32_t space_id() const { return space_id_; }
  // True while `tid` is one of this process's traced threads, or a child process whose
  // creation it is settling.
  bool owns(pid_t tid) const { return table_.find(tid) != nullptr || children_.count(tid) > 0; }

  // Observers are called in the order they were added. One added as a shared_ptr is kept
  // until the process is fully detached; `unowned(o)` registers one its caller keeps alive
  // and removes.
  void add_observer(std::shared_ptr<TraceObserver> o) { observers_.push_back(std::move(o)); }
  void remove_observer(const TraceObserver* o);

  // Detaches every thread now (the destructor does the same), and every child process whose
  // creation was not settled yet, even after the process itself has exited. `stop_timeout`
  // bounds the wait for threads to reach the stop a detach needs; a thread still not
  // stopped then (uninterruptible sleep) stays traced until profctl exits, when the kernel
  // releases it, and is counted in left_traced().
  void detach(std::chrono::milliseconds stop_timeout = std::chrono::milliseconds(2000));
  // Threads and child processes the last detach could not reach (see detach()).
  size_t left_traced() const { return left_traced_; }

  // ---- sampling sessions (traced_process_events.cpp) ----

  // Starts argv[0] (PATH searched) stopped before its exec and seized, with EXITKILL: a
  // program profctl started dies with it. It is left held at its exec. `trace_forks`: as
  // for seize().
  static std::variant<std::unique_ptr<TracedProcess>, AttachError> launch(
      const std::vector<std::string>& argv, bool trace_forks = true);

  // Asks for a sample of `tid`: interrupts it and returns at once. When its stop arrives,
  // handle_status() snapshots it, resumes it and returns a kSample event: the caller never
  // waits for a thread to reach its stop (on a busy machine a runnable thread may wait a
  // scheduler slice for a CPU before it can). False when the thread is gone.
  bool request_sample(pid_t tid);
  // What a status of one of this process's threads means for a sampling session (the
  // ProcessTree's pump hands it over): the status is applied (on_status) and the thread
  // resumed unless the event holds it (kExec). nullopt: nothing the session sees.
  std::optional<TraceEvent> handle_status(const Waiter::Event& ev, size_t stack_bytes);
  void set_stack_bytes(size_t n) { stack_bytes_ = n; }
  // Resumes a thread left stopped (the exec'ing thread after kExec, a program at its exec
  // or entry point).
  void resume(pid_t tid);
  // Interrupts every running thread; their stops are collected by the next stop of the
  // world or detach (ProcessTree: every process's threads stop in parallel).
  void interrupt_all();
  // For a program held at its exec (launch): runs it to its entry point (auxv AT_ENTRY),
  // where the dynamic linker has loaded its libraries and nothing of the program has run,
  // and leaves it stopped there.
  Result<void> run_to_entry();
  // For a program held at its exec: runs it with a breakpoint at `hook`, the address of a
  // function whose whole body is `ret` (ld.so's _dl_debug_state, which it calls at each
  // change of its link map), until a hit that `accept` takes (called with the program
  // stopped at the hit). A declined hit returns from the function at once, as it would have.
  // Leaves the program stopped at `hook` with its byte restored: it runs the `ret` next.
  Result<void> run_to_hook(uint64_t hook, const std::function<bool()>& accept);
  // How the program ended when run_to_hook or run_to_entry failed because it exited first
  // (ld.so could not load it): its status, reaped.
  std::optional<WaitStatus> early_exit() const { return early_exit_; }

  // ---- for a ProcessTree ----

  // A child process `pid` of `parent`, seized by the kernel at birth and held at its first
  // stop (already reaped): traced on as a process of its own, with its parent's mappings
  // (until it execs) and its wait queue. Left stopped; resume(pid) lets it run.
  static std::unique_ptr<TracedProcess> follow_child(pid_t pid, const TracedProcess& parent);
  // Hands the wait queue over to a ProcessTree (the process waits through it still) and
  // takes it back when the tree ends.
  std::unique_ptr<WaitQueue> lend_queue();
  void return_queue(std::unique_ptr<WaitQueue> q);
  // Child processes whose first stop arrived before their creator's event (parent
  // unknown), held by this process.
  std::vector<pid_t> held_first_stops() const;
  // Gives up the held first stop of `child` (its creator's event came to another
  // process, which settles it); false when this process holds none.
  bool give_up_first_stop(pid_t child);
  // Settles a held first stop now, parent unknown (its creator can no longer report it).
  void settle_first_stop(pid_t child);
  // After this process's exit: the children whose first stop arrived but whose creator's
  // event never will (the creator died at it) are settled now, parent unknown.
  void settle_orphans();
  // Child processes whose creation is not settled yet.
  size_t unsettled_children() const { return children_.size(); }
  // True while a traced thread might be between creating a process and reporting it
  // (running, or in a fork/clone syscall).
  bool creation_may_be_in_flight() const;

 private:
  friend class StoppedWorld;
  TracedProcess(pid_t pid, uint32_t space_id, std::unique_ptr<WaitQueue> own_queue,
                WaitQueue* queue);
  static std::unique_ptr<TracedProcess> make_root(pid_t pid);
  // launch(): walks the program from its stop to its exec (`exec_error` reports a failed
  // execvp); nullopt once it is held at its exec.
  std::optional<AttachError> walk_to_exec(const Fd& exec_error, const std::string& command);
  static uint32_t new_space_id();
  // The wait queue (StoppedWorld waits through it too).
  WaitQueue& waits() { return *queue_; }
  std::optional<Waiter::Event> next_status(std::chrono::milliseconds timeout);
  // run_to_entry and run_to_hook: a breakpoint at `at` until `accept` takes a hit; a declined
  // hit returns from the function (`ret`). `what` names the place for errors.
  Result<void> run_to_breakpoint(uint64_t at, const std::function<bool()>& accept,
                                 const std::string& what);
  Result<void> seize_all();
  Result<void> seize_one(pid_t tid);
  static std::optional<AttachError> check_seizable(pid_t pid);
  AttachError seize_error(const Error& e) const;

  // The one status handler: applies a wait status to the thread table and does what the
  // kernel requires whatever the caller's purpose (new threads and child processes at
  // their events, exec). The caller decides when to resume the thread.
  Transition on_status(const Waiter::Event& ev);
  // A signal-delivery stop whose signal is profctl's own (a breakpoint, the CPU timer):
  // kStopped, the signal never delivered.
  bool take_own_signal(const Waiter::Event& ev, Transition& tr);
  void on_creation_event(pid_t tid, int event);
  void on_child_process(pid_t child, pid_t parent_tid, int event, bool first_stop);
  void settle_child(const ChildProcess& c);
  // Detaches the child processes not settled yet, each at its first stop (waited for until
  // `deadline` when it has not arrived).
  void release_children(std::chrono::steady_clock::time_point deadline);

  // Resumes a stopped thread (with its pending signal; PTRACE_LISTEN if it is
  // group-stopped with none) or detaches it.
  void resume_one(pid_t tid, bool detach);
  // Sends PTRACE_INTERRUPT to a thread that is running or listening.
  void interrupt_one(pid_t tid);
  // A signal-delivery stop that arrived while the world is being stopped: re-deliver it
  // at once (never hold it) and stop the thread again.
  void redeliver_and_restop(pid_t tid);
  // Interrupts every running thread and collects their stops (every thread stopped, or
  // gone, or the deadline passed). Returns the tids that did not stop. `first`: threads to
  // interrupt before the others (those last seen running).
  std::vector<pid_t> stop_all(std::chrono::milliseconds timeout,
                              const std::vector<pid_t>& first = {});
  // stop_all's collection of the stops (traced_process.cpp says how).
  struct StopCollection {
    uint64_t t0 = 0;           // when the interrupts began (for the trace log)
    size_t stuck = 0;          // unresponsive threads still awaited
    std::vector<pid_t> order;  // awaited threads, in the order they were interrupted
    bool exec = false;         // a thread exec'd: the world is that one thread
    bool cut_short = false;    // the last pass ended at its misses, before the end
    size_t passes = 0;         // for the debug log
    size_t naps = 0;
  };
  void collect_all_stops(StopCollection& c, std::chrono::steady_clock::time_point deadline,
                         std::chrono::steady_clock::time_point stuck_deadline);
  // One pass: the status of each awaited thread that has one, applied, until `max_misses`
  // threads in a row had none. Returns how many were handled.
  size_t collect_stops(StopCollection& c, size_t max_misses);
  void resume_all(bool detach);
  void detach_all(std::chrono::milliseconds stop_timeout = std::chrono::milliseconds(2000));
  // The detach's last stopped world(s): every observer that needs one undoes its work
  // there, the world resumed and stopped again while one asks for it (bounded).
  void run_detach_observers(std::chrono::steady_clock::time_point deadline);
  std::vector<pid_t> stopped_tids() const;

  // capture_world's phases.
  std::map<pid_t, ThreadInfo> read_thread_infos() const;
  static size_t stack_copy_estimate(const std::map<pid_t, ThreadInfo>& infos,
                                    const std::vector<MapEntry>& maps, size_t max_bytes);
  std::vector<Snapshot> copy_stopped(StackReader& reader, const std::vector<MapEntry>& maps,
                                     size_t stack_bytes, PauseTimes& pause);
  void assemble_capture(WorldCapture& out, std::map<pid_t, ThreadInfo>& infos,
                        std::vector<Snapshot>& snaps, const std::vector<pid_t>& missing,
                        const CaptureOptions& opts) const;

  std::optional<Snapshot> snapshot_stopped(pid_t tid, size_t stack_bytes);
  // Snapshots a stopped thread and resumes it; `timer`: the stop is the CPU timer's.
  TraceEvent take_sample(pid_t tid, bool timer = false);
  std::optional<TraceEvent> on_exit_status(pid_t tid, const Waiter::Event& ev);
  std::optional<TraceEvent> on_event_stop(pid_t tid, const Transition& tr, size_t stack_bytes);
  void rebuild_after_exec();
  bool needs_detach_stop() const;

  pid_t pid_;
  uint32_t space_id_ = 0;
  ThreadTable table_;
  std::map<pid_t, ChildProcess> children_;  // child processes not settled yet
  std::vector<MapEntry> maps_;              // refreshed when a stack pointer falls outside them
  size_t stack_bytes_ = 8u << 20;           // for snapshots taken by handle_status()
  // The capture's one wait queue: owned while the process is a root alone, lent to a
  // ProcessTree meanwhile (queue_ points to it whoever owns it).
  std::unique_ptr<WaitQueue> own_queue_;
  WaitQueue* queue_ = nullptr;
  std::vector<std::shared_ptr<TraceObserver>> observers_;
  bool attached_ = true;
  std::optional<WaitStatus> early_exit_;  // the program's end inside run_to_breakpoint
  bool trace_forks_ = true;               // PTRACE_O_TRACEFORK/VFORK on the threads it seizes
  bool leader_gone_ = false;              // the main thread exited (pthread_exit): it is not traced
  pid_t failed_tid_ = 0;                  // the thread PTRACE_SEIZE refused
  size_t left_traced_ = 0;                // see left_traced()
  StopCollection last_collection_;        // how the last stop_all went (debug log)
  std::set<pid_t> unresponsive_;  // threads that missed a stop_all deadline, still interrupted
  // Remote syscalls (StoppedWorld::syscall) run as a chain of the target's own code: a
  // `syscall; ret` and a `mov $15, %rax; syscall` (rt_sigreturn). Found once per image.
  struct RemoteChain {
    uint64_t syscall_ret = 0;
    uint64_t sigreturn = 0;
    uint64_t sigreturn_next = 0;  // after its `syscall`: the ip seccomp sees
    pid_t pid = 0;
    uint32_t space = 0;
  };
  RemoteChain chain_;
};

}  // namespace profctl
