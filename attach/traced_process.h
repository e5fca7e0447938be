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
#include <deque>
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

// The memory and registers of a process profctl has seized, for code that runs while its
// threads are stopped (a StoppedWorld, or a forked child at its first stop).
class StoppedWorld;
class ProcessTree;

// A process (not a thread) a traced thread created, held at its first stop.
struct ChildHookArgs {
  pid_t pid = 0;           // the new process
  pid_t parent_tid = 0;    // the thread that created it
  int event = 0;           // PTRACE_EVENT_FORK / _VFORK / _CLONE
  bool shares_vm = false;  // vfork, clone(CLONE_VM): it runs in the target's own memory
};

class TracedProcess {
 public:
  ~TracedProcess();
  TracedProcess(const TracedProcess&) = delete;
  TracedProcess& operator=(const TracedProcess&) = delete;

  // Checks that `pid` can be traced (exists, not a kernel thread, not a zombie, not
  // traced already) and seizes every thread, re-listing /proc/PID/task until no new
  // thread appears. Nothing is stopped yet.
  static std::variant<std::unique_ptr<TracedProcess>, AttachError> seize(pid_t pid);

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

  // Runs for every process a traced thread creates (fork, vfork, clone without
  // CLONE_THREAD) while it is held at its first stop, before it runs a single
  // instruction; it is detached afterwards (it runs free of profctl). `mem` gives the hook
  // the child's memory and a syscall in it.
  using ChildHook = std::function<void(const ChildHookArgs&, StoppedWorld& child)>;
  void set_child_hook(ChildHook hook) { child_hook_ = std::move(hook); }
  // Runs after the child hook: true when the caller keeps the child traced (a ProcessTree
  // following it, now its owner); false (or empty) detaches it.
  using AdoptHook = std::function<bool(const ChildHookArgs&, TracedProcess& parent)>;
  void set_adopt_hook(AdoptHook hook) { adopt_hook_ = std::move(hook); }
  // With several traced processes (a ProcessTree), every wait of this one may return a
  // status of another: the router takes such a status (true) and hands it to its owner.
  using StatusRouter = std::function<bool(Waiter::Event& ev, const TracedProcess& self)>;
  void set_status_router(StatusRouter r) { router_ = std::move(r); }
  // Which address space the snapshots of this process belong to: it changes at exec, and a
  // forked child keeps its parent's (same mappings) until it execs. Stamped on every
  // Snapshot (Snapshot::space) so that each is unwound and symbolized with its own modules.
  uint32_t space_id() const { return space_id_; }
  // True while `tid` is one of this process's traced threads, or a child process whose
  // creation it is settling.
  bool owns(pid_t tid) const { return table_.find(tid) != nullptr || children_.count(tid) > 0; }
  // With several traced processes (a ProcessTree), the two halves of a child process's
  // creation — its creator's event and its own first stop — can reach different processes:
  // the first stop of a child whose event has not arrived yet is routed by its parent pid,
  // which is not its creator's after clone(CLONE_PARENT) or a reparenting. Asked at a
  // creator's event when this process has not seen the child's first stop: kFirstStop when
  // another process held it (and gave it up), kKnown when the child is traced already.
  enum class ChildClaim { kNone, kFirstStop, kKnown };
  using ChildClaimHook = std::function<ChildClaim(pid_t child, const TracedProcess& self)>;
  void set_child_claim(ChildClaimHook hook) { claim_ = std::move(hook); }
  // Runs inside the last stopped world before every thread is detached, on every exit
  // path that detaches (normal end, error, exception unwinding through the destructor).
  // Returns false to ask for the target to run briefly and be stopped again (a thread was
  // inside code the hook must not remove yet); bounded at about a second.
  using DetachHook = std::function<bool(StoppedWorld&)>;
  void add_detach_hook(DetachHook hook) { detach_hooks_.push_back(std::move(hook)); }
  // Detaches every thread now (the destructor does the same), and every child process whose
  // creation was not settled yet, even after the process itself has exited. `stop_timeout`
  // bounds the wait for threads to reach the stop a detach needs; a thread still not
  // stopped then (uninterruptible sleep) stays traced until profctl exits, when the kernel
  // releases it, and is counted in left_traced().
  void detach(std::chrono::milliseconds stop_timeout = std::chrono::milliseconds(2000));
  // Threads and child processes the last detach could not reach (see detach()).
  size_t left_traced() const { return left_traced_; }

  // Called from the status handler, whatever the caller's purpose, while the thread is
  // stopped. on_trap: a SIGTRAP signal-stop; return true when it was profctl's own
  // breakpoint and the hook has moved rip on (the signal is then not delivered).
  struct ThreadHooks {
    std::function<void(pid_t tid, const user_regs_struct& regs)> on_new_thread;
    std::function<void(pid_t tid)> on_thread_exit;
    std::function<bool(pid_t tid)> on_trap;
    std::function<void()> on_exec;
  };
  void set_thread_hooks(ThreadHooks hooks) { hooks_ = std::move(hooks); }
  // Runs on every snapshot right after its stack was copied, while the thread is still
  // stopped: the probe engine puts back what its own patches changed in the copy (a timed
  // wait's return address), so nothing read from the target shows profctl's own bytes.
  using SnapshotFilter = std::function<void(Snapshot&)>;
  void set_snapshot_filter(SnapshotFilter f) { snapshot_filter_ = std::move(f); }
  // Runs on every sampling snapshot (next_event's kSample) while its thread is still
  // stopped, after the snapshot filter: the sampling session reads what the kernel says of
  // the thread at the stop. Empty to remove.
  void set_sample_hook(SnapshotFilter f) { sample_hook_ = std::move(f); }
  // Says whether the signal `sig` stopping thread `tid` is profctl's own (the sampling
  // session's CPU timer): such a stop becomes a kSample event with `timer` set and the
  // signal is never delivered. Empty to remove.
  using OwnSignal = std::function<bool(pid_t tid, int sig)>;
  void set_own_signal(OwnSignal f) { own_signal_ = std::move(f); }

  // ---- sampling sessions (traced_process_events.cpp) ----

  // Starts argv[0] (PATH searched) stopped before its exec and seized, with EXITKILL: a
  // program profctl started dies with it. The first TraceEvent::kExec is its exec.
  static std::variant<std::unique_ptr<TracedProcess>, AttachError> launch(
      const std::vector<std::string>& argv);

  // Asks for a sample of `tid`: interrupts it and returns at once. When its stop arrives,
  // next_event() snapshots it, resumes it and returns a kSample event: the caller never
  // waits for a thread to reach its stop (on a busy machine a runnable thread may wait a
  // scheduler slice for a CPU before it can). False when the thread is gone.
  bool request_sample(pid_t tid);

  // A high-level event of the traced process. Everything else (stale interrupt stops,
  // signals for the target, new threads' first stops) is handled inside next_event().
  struct TraceEvent {
    enum class Kind {
      kThreadCreated,
      kThreadExited,
      kProcessExited,
      kExec,
      kSignal,
      kSample,
      kProcessCreated,  // ProcessTree: a followed child process (`child`), created by `tid`
    };
    TraceEvent(Kind k, pid_t t, pid_t c = 0, int s = 0) : kind(k), tid(t), child(c), status(s) {}
    Kind kind;
    pid_t tid = 0;                    // the creating / exiting / exec'ing / signalled thread
    pid_t child = 0;                  // kThreadCreated: the new thread
    int status = 0;                   // kProcessExited: raw wait status; kSignal: the signal
    std::optional<Snapshot> creator;  // kThreadCreated: the creator, stopped at the clone
    std::optional<Snapshot> sample;   // kSample: the thread's snapshot
    uint64_t stop_ns = 0;  // kSample: from the request to the stop (mostly waiting for a CPU)
    uint64_t held_ns = 0;  // kSample: from the stop to the resume: what it cost the thread
    bool timer = false;    // kSample: taken at a stop by profctl's own CPU timer signal
    pid_t process = 0;     // ProcessTree: the process of the event (kProcessExited, kExec)
  };
  // Waits up to `timeout` for the next event. nullopt: nothing happened in time.
  std::optional<TraceEvent> next_event(std::chrono::milliseconds timeout, size_t stack_bytes);
  void set_stack_bytes(size_t n) { stack_bytes_ = n; }
  // Puts an event back, to be returned first by next_event().
  void push_event(TraceEvent e) { events_.push_front(std::move(e)); }
  // Resumes a thread that next_event() left stopped (the exec'ing thread after kExec).
  void resume(pid_t tid);
  // For a program held at its exec (launch): runs it to its entry point (auxv AT_ENTRY),
  // where the dynamic linker has loaded its libraries and nothing of the program has run,
  // and leaves it stopped there.
  Result<void> run_to_entry();

 private:
  friend class StoppedWorld;
  friend class ProcessTree;
  explicit TracedProcess(pid_t pid) : pid_(pid), space_id_(new_space_id()) {}
  static uint32_t new_space_id();
  // The next status of any tracee that is not another traced process's (see set_status_router).
  std::optional<Waiter::Event> next_own(std::chrono::milliseconds timeout);
  Result<void> seize_all();
  Result<void> seize_one(pid_t tid);

  // The one status handler: applies a wait status to the thread table and does what the
  // kernel requires whatever the caller's purpose (new threads and child processes at
  // their events, exec). The caller decides when to resume the thread.
  Transition on_status(const Waiter::Event& ev);
  void on_child_process(pid_t child, pid_t parent_tid, int event, bool first_stop);
  void settle_child(const ChildProcess& c);
  // After this process's exit: the children whose first stop arrived but whose creator's
  // event never will (the creator died at it) are settled now, parent unknown.
  void settle_orphans();
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
  // gone, or the deadline passed). Returns the tids that did not stop.
  std::vector<pid_t> stop_all(std::chrono::milliseconds timeout);
  void resume_all(bool detach);
  void detach_all(std::chrono::milliseconds stop_timeout = std::chrono::milliseconds(2000));

  std::optional<Snapshot> snapshot_stopped(pid_t tid, size_t stack_bytes);
  std::optional<TraceEvent> handle_status(const Waiter::Event& ev, size_t stack_bytes);
  // Snapshots a stopped thread and resumes it; `timer`: the stop is the CPU timer's.
  TraceEvent take_sample(pid_t tid, bool timer = false);
  void rebuild_after_exec();

  pid_t pid_;
  uint32_t space_id_ = 0;
  ThreadTable table_;
  std::map<pid_t, ChildProcess> children_;  // child processes not settled yet
  std::vector<MapEntry> maps_;              // refreshed when a stack pointer falls outside them
  std::deque<TraceEvent> events_;           // events seen while waiting for something else
  std::deque<Waiter::Event> routed_in_;     // statuses another process's wait took for this one
  size_t stack_bytes_ = 8u << 20;           // for snapshots taken by next_event()
  Waiter waiter_;
  ChildHook child_hook_;
  AdoptHook adopt_hook_;
  StatusRouter router_;
  ChildClaimHook claim_;
  std::vector<DetachHook> detach_hooks_;
  ThreadHooks hooks_;
  SnapshotFilter snapshot_filter_;
  SnapshotFilter sample_hook_;
  OwnSignal own_signal_;
  bool attached_ = true;
  bool leader_gone_ = false;      // the main thread exited (pthread_exit): it is not traced
  pid_t failed_tid_ = 0;          // the thread PTRACE_SEIZE refused
  size_t left_traced_ = 0;        // see left_traced()
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
