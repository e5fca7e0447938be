// SPDX-License-Identifier: MIT
// SamplingSession: the attach/run capture loop. At every tick, a thread whose schedstat
// run time has not changed since its last sample is not stopped (its last stack stands);
// a thread that ran is stopped on its own, snapshotted and resumed at once. Between ticks
// it serves the target's events: clones (threadcreate), exits, exec, signals.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <vector>

#include "attach/cpu_timer.h"
#include "attach/perf_sampler.h"
#include "attach/proc.h"
#include "attach/process_tree.h"
#include "attach/sample_sink.h"
#include "attach/traced_process.h"
#include "base/fd.h"
#include "base/schedstat.h"

namespace profctl {

struct SessionStatus {
  double elapsed_s = 0;
  double duration_s = 0;  // the requested window (0: until stopped)
  uint64_t ticks = 0;     // sampling ticks so far (the achieved rate: ticks / elapsed)
  double cpu_s = 0;       // CPU the traced threads used since the start (live threads)
  size_t processes = 1;
  uint64_t samples = 0;  // thread snapshots taken
  size_t threads = 0;
};

struct SessionOptions {
  double rate_hz = 99;
  std::optional<std::chrono::nanoseconds> duration;  // nullopt: until stopped
  size_t stack_bytes = 8u << 20;
  bool sample = true;  // false: serve events only (threadcreate alone needs no ticks)
  // The cpu profile from each thread's own CPU clock (attach/cpu_timer.h) instead of the
  // ticks; falls back to the ticks when the kernel refuses it.
  bool cpu_timer = false;
  // With cpu_timer: first try the kernel's sample records (attach/perf_sampler.h: no stop,
  // no signal), then the CPU timer's signals. false: the signals only.
  bool perf_records = true;
  uint32_t perf_stack_bytes = 32 * 1024;  // user stack the kernel copies per sample
  // Whether the ticks' samples are consumed by the wall profile. When the cpu profile comes
  // from the threads' CPU clocks and no wall profile is made, the ticks stop no thread.
  bool wall = true;
  // Whether a cpu profile is made. Without one, the CPU clocks (cpu_timer) still run for a
  // wall profile: a running thread's wall sample is then its latest clock sample, with no
  // stop of its own; the clock samples no tick takes are dropped unwound.
  bool cpu = true;
  std::function<void(const SessionStatus&)> on_status;  // called ~4 times a second
  // Called every 100 ms and at every thread creation, while the target is alive: the
  // moment to notice new mappings (libraries loaded after exec, dlopen).
  std::function<void()> on_maps_check;
  // Called with the pid and pc of every sample (record or stop) as it is taken, and with the
  // start of every executable mapping the kernel's records report (a dlopen), while the
  // process still lives: a library loaded since the last look can have its maps read
  // before the process exits.
  std::function<void(pid_t, uint64_t)> on_sample_pc;
  // Called once the CPU clocks are set on the target's threads, before the first tick:
  // where `run` lets the program it holds go, so that its first instruction is sampled.
  std::function<void()> on_clocks_set;
  // 0: `stop` ends the capture at once (attach). Otherwise (run: the program was sent the
  // same signal) the capture goes on until the target exits, for at most this long after
  // `stop` was first seen, whatever state its threads are in.
  std::chrono::milliseconds stop_grace{0};
};

struct SessionResult {
  enum class End { kDuration, kInterrupted, kTargetExited, kExec };
  End end = End::kDuration;
  int exit_status = 0;  // raw wait status when the target exited
  double elapsed_s = 0;
  uint64_t ticks = 0;
  uint64_t samples = 0;  // threads stopped and snapshotted
  uint64_t records = 0;  // samples the kernel wrote without a stop (perf sample records)
  uint64_t reused = 0;   // thread samples that needed no stop
  uint64_t signals = 0;  // signals for the target seen and re-delivered
  uint64_t lost = 0;     // threads that could not be stopped for a sample
  // Running threads' samples that stopped where the thread resumed after waiting for a CPU
  // (not a fair draw of where it spends CPU): kept for the wall profile, their CPU time
  // charged to the thread's next fair sample.
  uint64_t cpu_deferred = 0;
  uint64_t timer_samples = 0;  // cpu samples taken by the CPU clocks (records or signals)
  // Where the cpu samples came from: "perf records", "cpu timer signals" or "ticks".
  std::string cpu_source;
  std::string perf_error;           // why the sample records could not be used ("" when they were)
  std::string cpu_timer_error;      // why the CPU timer could not be used ("" when it was)
  uint64_t perf_lost = 0;           // sample records the kernel could not write (ring full)
  uint64_t perf_unusable = 0;       // records without user registers or failing a size check
  uint64_t wall_from_records = 0;   // wall samples of running threads taken from their records
  uint64_t clock_unused = 0;        // clock samples dropped: no cpu profile, and no tick took them
  uint64_t ticks_owed = 0;          // running threads' ticks owed to their next stop (over budget)
  uint64_t proc_looks = 0;          // ticks' schedstat reads of threads (idle ones mostly)
  uint64_t untracked = 0;           // threads never sampled: their /proc files would not open
  std::string untracked_error;      // why (the first such error)
  std::vector<uint64_t> pauses_ns;  // one per snapshot: stop to resume (the thread held)
  std::vector<uint64_t> stop_latencies_ns;  // one per snapshot: interrupt to stop
};

// The session observes every process of the tree (TraceObserver::on_sample: what the
// kernel says of a thread at its sample's stop).
class SamplingSession : private TraceObserver {
 public:
  SamplingSession(ProcessTree& tp, SessionOptions opts, SampleSink& sink)
      : tp_(tp), opts_(std::move(opts)), sink_(sink) {}

  // Runs until the duration elapses, `stop` is set (by a signal handler), the target
  // exits or execs. The target stays seized; the caller detaches.
  SessionResult run(const std::atomic<bool>& stop);

 private:
  // Per-thread /proc files kept open (a pread of an open file is far cheaper than an
  // open), and what the thread's last sample saw.
  struct ThreadState {
    Fd schedstat;
    Fd stat;
    Fd syscall;          // may be closed: read_state then reads stat each time
    pid_t pid = 0;       // its process
    uint32_t space = 0;  // its process's address space (changes at exec)
    std::string name;
    char state = '?';
    bool have_stack = false;
    uint64_t last_run_ns = 0;     // schedstat run time at the last snapshot
    uint64_t start_run_ns = 0;    // and when the session began tracking the thread
    uint64_t seen_run_ns = 0;     // and at the latest read
    uint64_t cpu_mark_ns = 0;     // run time already attributed to the cpu profile
    uint64_t run_at_stop_ns = 0;  // schedstat run time at the thread's latest sample stop
    uint64_t last_tick_ns = 0;
    uint64_t idle_skip = 0;    // ticks to skip before the next look at an idle thread
    uint64_t idle_streak = 0;  // consecutive looks that found it had not run
    uint64_t last_sp = 0;      // rsp and rip of the last snapshot
    uint64_t last_pc = 0;
    // Sample records: the latest one, held until the next tick (it may be the wall sample
    // too), and the wall time of ticks that found the thread running with no new record,
    // owed to its next one.
    std::optional<ThreadSample> held;
    uint64_t wall_owed_ns = 0;
    uint64_t ticks_owed = 0;
    // CPU the thread used before its clock was armed (it was born since the last tick):
    // added to its first record's weight.
    uint64_t clock_unseen_ns = 0;
    // perf records' switch count at the last look (RunState::ins), and whether the next
    // look must read /proc all the same: after a stop of ours, whose own switches (into the
    // stop and out, to restart its syscall) say nothing about the thread's code.
    uint64_t seen_ins = 0;
    bool verify_by_reads = true;
    // The CPU timer's count of the thread's trips onto a CPU at the last tick
    // (CpuTimer::sched_ins): unchanged, a thread asleep then is asleep still.
    std::optional<uint32_t> seen_sched_ins;
    int processor = -1;  // the CPU it ran on last, at its latest state read
    // Where it was blocked at the latest state read (its /proc syscall file), if it was.
    std::optional<SyscallWait> blocked_in;
    // Its reused samples since its last other one, merged (same state and name): handed to
    // the sink as one, not one per tick (hand_merged).
    std::optional<ThreadSample> merged;
    uint32_t running_looks = 0;  // state reads that found it running (stat: the 1st, every 16th)
  };
  // A sample asked for whose stop has not arrived yet.
  struct Pending {
    ThreadSample sample;
    uint64_t run_ns = 0;
    uint64_t timeslices = 0;          // schedstat's count of CPU grants when the sample was asked
    uint64_t timeslices_at_stop = 0;  // and at its stop (0: not read)
  };
  // A running thread a tick would stop (no CPU clocks): stop_runnable() picks which do.
  struct Runnable {
    pid_t tid = 0;
    Pending pending;
  };
  // How long a running thread's wall ticks may wait for its next sample (clock or stop).
  static constexpr uint64_t kMaxOwedNs = 250'000'000;

  ThreadState* track(pid_t tid);
  // The ticker: asks for a sample of every thread that ran since its last one.
  void tick();
  void tick_thread(pid_t tid);
  // With its state read, a thread that ran since its last look: its last stack if it is
  // parked where it was, else a stop (through stop_runnable() when running, without clocks).
  void look_after_run(pid_t tid, ThreadState& ts, ThreadSample&& s, const SchedStat& sched);
  void request(pid_t tid, Pending&& p);
  // The tick's running threads (no CPU clocks): stopped up to stop_budget_, the rest owe.
  void stop_runnable();
  // Reads the thread's name and state (/proc stat).
  void read_state(pid_t tid, ThreadState& ts);
  // With its state read: true when its run time moved but it is still on the stack of its
  // last snapshot (blocked where it was, or job-control stopped): no stop.
  bool parked_on_last_stack(pid_t tid, ThreadState& ts);
  // With perf records' switch state: true when the tick's wall sample is settled without
  // reading /proc (the thread slept since its last look: its last stack; or it is on a CPU
  // or waiting for one: its cpu record, as wall_from_record).
  bool tick_from_switches(pid_t tid, ThreadState& ts, ThreadSample& s);
  // With the CPU timer's page: true when the thread was asleep at its last look and the
  // kernel has not put it on a CPU since (its last stack stands), read with no syscall.
  bool tick_from_timer_page(pid_t tid, ThreadState& ts, ThreadSample& s);
  // A running thread's wall sample from its held cpu record, or owed to its next one (up to
  // 250 ms); false when neither (it needs a stop). run_ns: its schedstat run time, if read.
  bool wall_from_held(ThreadState& ts, ThreadSample& s, std::optional<uint64_t> run_ns);
  // At each sample's stop, before the thread runs again: how many times the kernel has
  // given it a CPU (complete() compares it with the count when the sample was asked).
  void on_sample(Snapshot& snap) override;
  // The cpu profile's CPU timers (opts_.cpu_timer), on every traced thread; the session
  // falls back to the ticks when the kernel refuses one.
  void start_cpu_timer();
  // Why the capture ends now, if it does (`stop_by`: the grace after `stop` was seen).
  std::optional<SessionResult::End> ending(
      std::chrono::steady_clock::time_point now, const std::atomic<bool>& stop,
      std::optional<std::chrono::steady_clock::time_point>& stop_by);
  void report_status(std::chrono::steady_clock::time_point now);
  // Event dispatch: one event of the target (clone, exit, exec, signal, sample taken).
  // Returns the end of the capture when the event ends it.
  std::optional<SessionResult::End> dispatch(TracedProcess::TraceEvent& ev);
  void on_thread_created(TracedProcess::TraceEvent& ev);
  void complete(TracedProcess::TraceEvent& ev);
  // Emits the thread's last stack for this tick (`state`: the sample's, else the thread's).
  void reuse(pid_t tid, ThreadSample& s, ThreadState& ts, std::optional<char> state = std::nullopt);
  // A running thread's wall sample from its latest CPU-clock sample (a record, or a CPU
  // timer's stop): no stop of its own. True when the tick needs nothing more of the thread.
  bool wall_from_record(pid_t tid, ThreadState& ts, ThreadSample& s,
                        std::optional<uint64_t> run_ns);
  // What a thread's records still hold back: the held record, the owed wall time.
  void flush_records(pid_t tid, ThreadState& ts);
  // A CPU timer's sample (the thread stopped where its CPU was).
  void timed(TracedProcess::TraceEvent& ev);
  // A CPU-clock sample: held for the thread's next tick when a wall profile is made.
  void hold(ThreadState* ts, ThreadSample&& s);
  // A CPU-clock sample no tick took for its wall sample: the cpu profile's, if one is made.
  void clock_only(ThreadSample&& s);
  // Hands the thread's merged reused samples to the sink: before any other sample of it (they
  // refer to the stack before that one), at its exit, at a status report and at the end.
  void hand_merged(ThreadState& ts);
  // A kernel sample record (the thread was not stopped at all).
  // `space`: the address space to unwind it in (0: the thread's current one).
  void recorded(PerfSample&& ps, uint32_t space = 0);
  // The thread's CPU clock: armed when it appears, drained and closed when it goes.
  void clock_add(pid_t tid);
  void clock_remove(pid_t tid);
  // A thread born (or exec'd into a new event) during the session gets its clock at the
  // next tick, not at once: a process that lives less than a tick (fork+exec of a short
  // command) then costs no event at all, and it could not have filled a period of its CPU
  // clock anyway (the first record comes a full period after the clock starts). What it
  // used before its clock started is added to its first record (clock_unseen_ns).
  void clock_due(pid_t tid);
  void arm_due_clocks();
  void drain_records();
  // A followed process is gone (exit) or is a new image (exec): its threads' states go.
  void forget_process(pid_t pid);
  void on_exec(pid_t pid);
  // The thread's name, read once when no tick has read it.
  const std::string& name_of(ThreadState& ts);
  // Fills in the sample's process: pid, comm and address space.
  void stamp(ThreadSample& s, const ThreadState& ts) const;
  // End-of-capture flush: samples still on their way get a moment to arrive.
  SessionResult finish(SessionResult::End end);

  ProcessTree& tp_;
  SessionOptions opts_;
  SampleSink& sink_;
  SessionResult res_;
  std::map<pid_t, ThreadState> threads_;
  std::map<pid_t, Pending> pending_;
  // Threads (and processes) created during the session and not tracked yet: all of their
  // CPU is the session's, from their first instruction.
  std::set<pid_t> born_;
  std::set<pid_t> untrackable_;   // threads whose /proc files would not open (counted once)
  std::vector<pid_t> clock_due_;  // threads whose clock is armed at the next tick
  std::chrono::steady_clock::time_point start_;
  uint64_t max_idle_skip_ = 0;
  uint64_t idle_recheck_ticks_ = 1;  // kIdleRecheck in ticks
  size_t stop_budget_ = 1;           // running threads stopped per tick at most: the target's CPUs
  std::vector<Runnable> runnable_;
  // null: cpu samples come from the ticks. Shared with the own-signal observer on every
  // process, which must recognise a signal the timer raised until the target is detached.
  std::shared_ptr<CpuTimer> timer_;
  // null: no sample records (the CPU timer's signals or the ticks make the cpu profile).
  std::unique_ptr<PerfSampler> perf_;
  uint64_t old_image_unusable_ = 0;  // records of an image gone before its thread was tracked
};
// Median and maximum of a set of durations (0 when empty).
std::pair<uint64_t, uint64_t> median_and_max(std::vector<uint64_t> v);

}  // namespace profctl
