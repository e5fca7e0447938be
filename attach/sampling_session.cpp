// SPDX-License-Identifier: MIT
#include "attach/sampling_session.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <tuple>
#include <utility>

#include "attach/proc.h"
#include "attach/realtime.h"
#include "base/clock.h"
#include "base/fd.h"
#include "base/log.h"
#include "base/schedstat.h"

namespace profctl {
namespace {

using Clock = std::chrono::steady_clock;

std::optional<std::string> pread_text(const Fd& fd) {
  char buf[1024];
  ssize_t n = pread(fd.get(), buf, sizeof buf - 1, 0);
  if (n <= 0) {
    return std::nullopt;
  }
  return std::string(buf, static_cast<size_t>(n));
}

// The thread's schedstat, from its open file (a pread is far cheaper than an open).
std::optional<SchedStat> read_schedstat(const Fd& fd) {
  auto text = pread_text(fd);
  return text ? parse_schedstat(*text) : std::nullopt;
}

std::optional<uint64_t> read_run_ns(const Fd& fd) {
  auto s = read_schedstat(fd);
  return s ? std::optional<uint64_t>(s->run_ns) : std::nullopt;
}

// The CPU timer's signal is profctl's own, on every process, until the detach: one raised
// just before the session ended is still taken as a sample, never delivered.
class TimerSignals final : public TraceObserver {
 public:
  explicit TimerSignals(std::shared_ptr<CpuTimer> timer) : timer_(std::move(timer)) {}
  bool own_signal(pid_t tid, int sig) override { return timer_->is_ours(tid, sig); }

 private:
  std::shared_ptr<CpuTimer> timer_;
};

// The CPUs a process may run on (its affinity), at least 1.
size_t cpus_of(pid_t pid) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(pid, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) {
    return static_cast<size_t>(CPU_COUNT(&set));
  }
  return static_cast<size_t>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)));
}

}  // namespace

std::pair<uint64_t, uint64_t> median_and_max(std::vector<uint64_t> v) {
  if (v.empty()) {
    return {0, 0};
  }
  auto mid = v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2);
  std::nth_element(v.begin(), mid, v.end());
  uint64_t med = *mid;
  uint64_t mx = *std::max_element(v.begin(), v.end());
  return {med, mx};
}

SamplingSession::ThreadState* SamplingSession::track(pid_t tid) {
  auto it = threads_.find(tid);
  if (it != threads_.end()) {
    return &it->second;
  }
  const pid_t pid = tp_.pid_of(tid) != 0 ? tp_.pid_of(tid) : tp_.pid();
  std::string base = "/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/";
  if (untrackable_.contains(tid)) {
    return nullptr;
  }
  auto ss = Fd::open(base + "schedstat", O_RDONLY);
  auto st = ss ? Fd::open(base + "stat", O_RDONLY) : Result<Fd>(ss.error());
  if (!ss || !st) {
    // Gone (ENOENT): its exit event follows. Anything else (EMFILE: the open-files limit)
    // leaves a live thread unsampled, which the capture must say.
    if (st.error().err != ENOENT && st.error().err != ESRCH) {
      untrackable_.insert(tid);
      ++res_.untracked;
      if (res_.untracked_error.empty()) {
        res_.untracked_error = st.error().message();
      }
    }
    return nullptr;
  }
  ThreadState ts;
  ts.schedstat = std::move(*ss);
  ts.stat = std::move(*st);
  if (auto sc = Fd::open(base + "syscall", O_RDONLY)) {
    ts.syscall = std::move(*sc);
  }
  ts.pid = pid;
  ts.space = tp_.space_of(tid);
  // CPU used before the session is not the session's; a thread born during it has used
  // none before it (a short-lived child's CPU would otherwise be lost up to its first sample).
  ts.cpu_mark_ns = born_.erase(tid) > 0 ? 0 : read_run_ns(ts.schedstat).value_or(0);
  ts.start_run_ns = ts.cpu_mark_ns;
  ts.seen_run_ns = ts.cpu_mark_ns;
  ts.last_tick_ns = monotonic_ns();
  return &threads_.emplace(tid, std::move(ts)).first->second;
}

void SamplingSession::complete(TracedProcess::TraceEvent& ev) {
  auto p = pending_.find(ev.tid);
  auto t = threads_.find(ev.tid);
  if (p == pending_.end() || t == threads_.end()) {
    return;
  }
  ThreadSample s = std::move(p->second.sample);
  const uint64_t run_ns = p->second.run_ns;
  const uint64_t p_timeslices = p->second.timeslices;
  const uint64_t p_at_stop = p->second.timeslices_at_stop;
  pending_.erase(p);
  ThreadState* ts = &t->second;
  if (!ev.sample) {
    ++res_.lost;
    return;
  }
  ++res_.samples;
  res_.pauses_ns.push_back(ev.held_ns);
  res_.stop_latencies_ns.push_back(ev.stop_ns);
  ts->have_stack = true;
  ts->verify_by_reads = true;
  if (opts_.on_sample_pc) {
    opts_.on_sample_pc(ts->pid, ev.sample->regs.rip);
  }
  // The run time at the stop, not at the request: getting into our stop (and out of it) is
  // run time too. A thread that has not had a CPU since is not stopped again: one that waits
  // longer than a tick for a CPU would otherwise be stopped at every tick and only ever run
  // into our next stop, never its own code (a spinner frozen in 't' under load).
  ts->last_run_ns = std::max(run_ns, ts->run_at_stop_ns);
  ts->last_sp = ev.sample->regs.rsp;
  ts->last_pc = ev.sample->regs.rip;
  if (timer_ || perf_) {
    s.for_cpu = false;  // the CPU clocks' samples make the cpu profile
  } else if (s.state == 'R') {
    // Where a thread stops says where it spends CPU only if it was on a CPU when asked: the
    // interrupt then lands at an arbitrary instruction. A thread that was waiting for a CPU
    // (preempted) stops where it resumes: its preemption point, which the kernel puts
    // preferably at a syscall's return, a biased place (issue: 34% of CPU charged to a
    // clock_gettime that took 0.4%). The kernel counts every time it gives the thread a
    // CPU (schedstat timeslices): one more between the request and the stop means it was
    // not running at the request. Such a sample keeps its stack (the wall profile's
    // truth: the thread was there) but charges no CPU; the time goes to the thread's next
    // fair sample, whose place is a fair draw, so the CPU profile stays unbiased.
    const bool fair = p_at_stop != 0 && p_at_stop == p_timeslices;
    if (fair) {
      s.cpu_ns = run_ns - std::min(run_ns, ts->cpu_mark_ns);
      ts->cpu_mark_ns = run_ns;
    } else {
      ++res_.cpu_deferred;
    }
  }
  stamp(s, *ts);
  s.snap = std::move(ev.sample);
  hand_merged(*ts);
  sink_.on_sample(std::move(s));
}

const std::string& SamplingSession::name_of(ThreadState& ts) {
  if (ts.name.empty()) {  // no tick has read it (the CPU clocks' samples, no wall profile)
    if (auto text = pread_text(ts.stat)) {
      if (auto st = parse_stat(*text)) {
        ts.name = st->comm;
      }
    }
  }
  return ts.name;
}

void SamplingSession::stamp(ThreadSample& s, const ThreadState& ts) const {
  s.pid = ts.pid;
  s.space = ts.space;
  s.process = tp_.comm_of(ts.pid);
}

void SamplingSession::forget_process(pid_t pid) {
  for (auto it = threads_.begin(); it != threads_.end();) {
    if (it->second.pid != pid) {
      ++it;
      continue;
    }
    clock_remove(it->first);
    flush_records(it->first, it->second);
    hand_merged(it->second);
    pending_.erase(it->first);
    sink_.on_thread_exited(it->first);
    it = threads_.erase(it);
  }
}

void SamplingSession::on_exec(pid_t pid) {
  if (!perf_) {
    forget_process(pid);
    clock_due(pid);  // the exec'ing thread is the leader now
    return;
  }
  // The tree resumed the new image before this event reached the session, so its rings may
  // hold records of both images: the old image's (up to the exec marker) go with the old
  // state (address space, name), the new image's with the new.
  std::vector<pid_t> tids{pid};
  for (const auto& [tid, ts] : threads_) {
    if (ts.pid == pid && tid != pid) {
      tids.push_back(tid);
    }
  }
  auto emit = [this](PerfSample&& ps) { recorded(std::move(ps)); };
  // The tree has switched the process to its new image already: the old image's records
  // take the space their thread had (none known: they cannot be unwound, and are counted).
  auto emit_old = [this](PerfSample&& ps) {
    auto t = threads_.find(ps.tid);
    if (t == threads_.end()) {
      ++old_image_unusable_;
      return;
    }
    recorded(std::move(ps), t->second.space);
  };
  for (pid_t tid : tids) {
    perf_->drain(tid, emit_old, /*until_exec=*/true);
  }
  for (pid_t tid : tids) {
    if (auto t = threads_.find(tid); t != threads_.end()) {
      flush_records(tid, t->second);
      hand_merged(t->second);
      pending_.erase(tid);
      sink_.on_thread_exited(tid);
      threads_.erase(t);
    }
  }
  if (tids.size() == 1 && perf_->has(pid)) {
    // One thread: its event stays. The kernel keeps a task's events across exec, and what
    // the ring holds after the exec marker is the new image's (the space it has now). A
    // fork+exec then costs one event, not two.
    tp_.note_space(pid, tp_.space_of(pid));  // its modules, read while it is surely alive
    return;
  }
  for (pid_t tid : tids) {
    perf_->remove(tid, emit);  // the new image's first records, with its new state
  }
  clock_due(pid);  // a fresh event for the exec'ing thread, the leader now
}

void SamplingSession::timed(TracedProcess::TraceEvent& ev) {
  if (!ev.sample) {
    return;
  }
  ThreadState* ts = track(ev.tid);
  ++res_.samples;
  ++res_.timer_samples;
  res_.pauses_ns.push_back(ev.held_ns);
  if (opts_.on_sample_pc && ts != nullptr) {
    // A library the pc is in is read now, while the process lives (as for every sample).
    opts_.on_sample_pc(ts->pid, ev.sample->regs.rip);
  }
  ThreadSample s;
  s.tid = ev.tid;
  s.name = ts != nullptr ? name_of(*ts) : std::string();
  s.state = 'R';  // it was on a CPU: that is what raised the signal
  s.from_clock = true;
  s.time_ns = monotonic_ns();
  // The CPU time since the thread's last timer sample, exactly (schedstat at the stop):
  // counting one period per sample would lose the overflows merged into one pending signal
  // (a thread that waited for its stop longer than a period).
  if (ts != nullptr && ts->run_at_stop_ns != 0) {
    s.cpu_ns = ts->run_at_stop_ns - std::min(ts->run_at_stop_ns, ts->cpu_mark_ns);
    ts->cpu_mark_ns = std::max(ts->cpu_mark_ns, ts->run_at_stop_ns);
  } else {
    s.cpu_ns = timer_ ? timer_->period_ns() : 0;
  }
  s.for_wall = false;
  if (ts != nullptr) {
    stamp(s, *ts);
  }
  s.snap = std::move(ev.sample);
  hold(ts, std::move(s));
}

void SamplingSession::hold(ThreadState* ts, ThreadSample&& s) {
  if (ts != nullptr && opts_.wall) {
    // Held until the thread's next tick, which may make it the wall sample too
    // (wall_from_record): a running thread is then not stopped again for its wall sample.
    if (ts->held) {
      clock_only(std::move(*ts->held));
    }
    ts->held = std::move(s);
    return;
  }
  clock_only(std::move(s));
}

void SamplingSession::clock_only(ThreadSample&& s) {
  if (opts_.cpu) {
    if (auto t = threads_.find(s.tid); t != threads_.end()) {
      hand_merged(t->second);
    }
    sink_.on_sample(std::move(s));
  } else {
    ++res_.clock_unused;
  }
}

void SamplingSession::reuse(pid_t /*tid*/, ThreadSample& s, ThreadState& ts,
                            std::optional<char> state) {
  s.name = ts.name;
  s.state = state.value_or(ts.state);
  stamp(s, ts);
  ++res_.reused;
  // Merged here, as the collector would: one hand-over per run of the same stack, state
  // and name, not one per tick (64 idle threads at 99 Hz made 6,300 a second, 8% of the
  // sampling thread's CPU).
  if (ThreadSample* m = ts.merged ? &*ts.merged : nullptr;
      m != nullptr && m->state == s.state && m->name == s.name && m->for_cpu == s.for_cpu &&
      m->for_wall == s.for_wall && m->space == s.space) {
    m->ticks += s.ticks;
    m->wall_ns += s.wall_ns;
    m->cpu_ns += s.cpu_ns;
    return;
  }
  hand_merged(ts);
  ts.merged = std::move(s);
}

void SamplingSession::hand_merged(ThreadState& ts) {
  if (ts.merged) {
    sink_.on_sample(std::move(*ts.merged));
    ts.merged.reset();
  }
}

SessionResult SamplingSession::finish(SessionResult::End end) {
  // The window ends here, whatever follows (a wall-clock deadline is kept to the tick).
  res_.elapsed_s = std::chrono::duration<double>(Clock::now() - start_).count();
  // Samples still on their way are given a moment to arrive; what is still in flight after
  // that is the capture's edge, not a loss.
  const bool target_alive =
      end == SessionResult::End::kDuration || end == SessionResult::End::kInterrupted;
  auto until = Clock::now() + std::chrono::milliseconds(100);
  while (target_alive && !pending_.empty() && Clock::now() < until) {
    auto ev = tp_.next_event(std::chrono::milliseconds(10), opts_.stack_bytes);
    if (!ev) {
      continue;
    }
    using EK = TracedProcess::TraceEvent::Kind;
    if (ev->kind == EK::kSample) {
      complete(*ev);
    } else if (ev->kind == EK::kThreadExited) {
      pending_.erase(ev->tid);
    } else if (ev->kind == EK::kSignal) {
      ++res_.signals;
    } else if (ev->kind == EK::kProcessExited || ev->kind == EK::kExec ||
               ev->kind == EK::kProcessCreated) {
      TracedProcess::TraceEvent again(ev->kind, ev->tid, ev->child, ev->status);
      again.process = ev->process;
      if (dispatch(*ev)) {
        tp_.push_event(std::move(again));  // the end: the caller sees it for itself
        break;
      }
    }
  }
  pending_.clear();
  drain_records();
  for (auto& [tid, ts] : threads_) {
    flush_records(tid, ts);
    hand_merged(ts);
  }
  res_.end = end;
  return res_;
}

void SamplingSession::on_thread_created(TracedProcess::TraceEvent& ev) {
  if (opts_.on_maps_check) {
    opts_.on_maps_check();
  }
  if (ev.child != 0) {
    clock_due(ev.child);
    born_.insert(ev.child);
  }
  if (!ev.creator) {
    return;
  }
  ThreadCreation c;
  c.creator = ev.tid;
  c.child = ev.child;
  c.time_ns = monotonic_ns();
  if (auto* ts = track(ev.tid)) {
    if (ts->name.empty()) {
      if (auto st = read_task_stat(ts->pid, ev.tid)) {
        ts->name = st->comm;
      }
    }
    c.creator_name = ts->name;
    c.pid = ts->pid;
    c.process = tp_.comm_of(ts->pid);
  }
  c.snap = std::move(*ev.creator);
  sink_.on_thread_created(std::move(c));
}

std::optional<SessionResult::End> SamplingSession::dispatch(TracedProcess::TraceEvent& ev) {
  using EK = TracedProcess::TraceEvent::Kind;
  switch (ev.kind) {
    case EK::kThreadCreated:
      on_thread_created(ev);
      break;
    case EK::kThreadExited:
      clock_remove(ev.tid);
      if (auto t = threads_.find(ev.tid); t != threads_.end()) {
        flush_records(ev.tid, t->second);
        hand_merged(t->second);
      }
      threads_.erase(ev.tid);
      pending_.erase(ev.tid);
      born_.erase(ev.tid);
      sink_.on_thread_exited(ev.tid);
      break;
    case EK::kProcessCreated:
      if (ev.child != 0) {
        clock_due(ev.child);
        born_.insert(ev.child);
      }
      break;
    case EK::kProcessExited:
      if (ev.process != 0 && ev.process != tp_.pid()) {
        forget_process(ev.process);  // a followed child: the capture goes on
        break;
      }
      res_.exit_status = ev.status;
      return SessionResult::End::kTargetExited;
    case EK::kExec:
      if (tp_.following()) {
        on_exec(ev.process);  // a new image, sampled on (the tree resumed it)
        break;
      }
      return SessionResult::End::kExec;
    case EK::kSignal:
      ++res_.signals;
      break;
    case EK::kSample:
      if (ev.timer) {
        timed(ev);
      } else {
        complete(ev);
      }
      break;
  }
  return std::nullopt;
}

void SamplingSession::tick() {
  ++res_.ticks;
  arm_due_clocks();
  drain_records();
  if ((timer_ || perf_) && !opts_.wall) {
    return;  // the cpu profile comes from the CPU clocks, and no wall profile is made
  }
  // Idle threads are looked at every kIdleRecheck at most, and all of them together at most
  // kIdleLooksPerSecond times a second: past ~60 threads at 99 Hz each is looked at less
  // often, so that 2,000 idle threads cost what 60 do (each look is a /proc read where
  // neither switch records nor the timer's page answer), and a wake-up is seen later.
  constexpr double kIdleLooksPerSecond = 2000;
  const auto by_budget = static_cast<uint64_t>(static_cast<double>(threads_.size()) *
                                               opts_.rate_hz / kIdleLooksPerSecond);
  max_idle_skip_ = std::max(idle_recheck_ticks_, by_budget) - 1;
  // Which threads ran since their last sample: only those are stopped. Their stops are
  // asked for all at once and taken as they arrive (next_event), so a tick never waits
  // for a thread that is waiting for a CPU.
  for (pid_t tid : tp_.tids()) {
    tick_thread(tid);
  }
  stop_runnable();
}

void SamplingSession::tick_thread(pid_t tid) {
  ThreadState* ts = track(tid);
  if (ts == nullptr) {
    return;
  }
  uint64_t t_now = monotonic_ns();
  uint64_t wall = t_now - ts->last_tick_ns;
  ts->last_tick_ns = t_now;
  if (auto p = pending_.find(tid); p != pending_.end()) {
    p->second.sample.wall_ns += wall;  // still on its way to the stop: same stack
    return;
  }
  ThreadSample s;
  s.tid = tid;
  s.time_ns = t_now;
  s.wall_ns = wall;
  if (timer_ && tick_from_timer_page(tid, *ts, s)) {
    return;
  }
  // A timer sample since the last tick says the thread ran: whether it still runs (its
  // state) is all the tick needs, not its run time.
  if (timer_ && ts->held) {
    if (wall_from_record(tid, *ts, s, std::nullopt)) {
      return;
    }
    // It ran and is off a CPU now (wall_from_record read its state): where does it sleep?
    if (auto sched = read_schedstat(ts->schedstat)) {
      ts->seen_run_ns = sched->run_ns;
      ts->idle_skip = 0;
      ts->idle_streak = 0;
      look_after_run(tid, *ts, std::move(s), *sched);
    }
    return;
  }
  // A thread that keeps not running is looked at less and less often (every 2nd,
  // 4th... tick, at most kIdleRecheck apart): 56 idle threads then cost next to
  // nothing. One that wakes is seen within kIdleRecheck; its CPU is charged exactly
  // anyway (schedstat deltas).
  if (ts->have_stack && ts->idle_skip > 0) {
    --ts->idle_skip;
    reuse(tid, s, *ts);
    return;
  }
  if (perf_ && tick_from_switches(tid, *ts, s)) {
    return;
  }
  ++res_.proc_looks;
  auto sched = read_schedstat(ts->schedstat);
  if (!sched) {
    return;  // exiting
  }
  const uint64_t run_ns = sched->run_ns;
  ts->seen_run_ns = run_ns;
  if (ts->have_stack && run_ns == ts->last_run_ns) {
    ts->idle_streak = std::min<uint64_t>(ts->idle_streak + 1, 16);
    ts->idle_skip = std::min<uint64_t>((1ULL << ts->idle_streak) - 1, max_idle_skip_);
    reuse(tid, s, *ts);
    return;
  }
  ts->idle_streak = 0;
  if (perf_ || timer_) {
    if (wall_from_record(tid, *ts, s, run_ns)) {  // reads its state
      return;
    }
  } else {
    read_state(tid, *ts);
  }
  look_after_run(tid, *ts, std::move(s), *sched);
}

void SamplingSession::look_after_run(pid_t tid, ThreadState& ts, ThreadSample&& s,
                                     const SchedStat& sched) {
  if (parked_on_last_stack(tid, ts)) {
    ts.last_run_ns = sched.run_ns;
    reuse(tid, s, ts);
    return;
  }
  s.name = ts.name;
  s.state = ts.state;
  Pending p{std::move(s), sched.run_ns, sched.timeslices};
  if (!perf_ && !timer_) {
    if (p.sample.state == 'R' && ts.have_stack) {
      runnable_.push_back(Runnable{tid, std::move(p)});  // stop_runnable() decides
      return;
    }
    flush_records(tid, ts);  // its owed running ticks, before its stack moves on
  }
  request(tid, std::move(p));
}

void SamplingSession::request(pid_t tid, Pending&& p) {
  pending_[tid] = std::move(p);
  if (!tp_.request_sample(tid)) {
    pending_.erase(tid);  // gone: its exit arrives as an event
  }
}

// Without CPU clocks every thread found running is a stop, and on a machine with more runnable
// threads than CPUs most of them are not on a CPU at the tick: they stop only once they get
// one, at their preemption point, a stop that serves the wall profile alone (their CPU goes
// to a fair sample: complete()). 8 busy threads on 2 CPUs made 5.4 stops a tick, 94% of them
// such. At most as many are stopped per tick as the target has CPUs, the longest-owed first;
// the others owe the tick's wall time to their next stop, as a running thread with no new
// clock sample does (wall_from_held), for at most kMaxOwedNs.
void SamplingSession::stop_runnable() {
  // First those that must (owed too long), then those that may be on a CPU right now: not
  // queued on the one profctl runs on, whose thread it preempted. Their stop is the fair draw
  // the cpu profile counts. Then the longest-owed.
  // A thread no longer tracked is not stopped (none is expected: no event is handled
  // between the tick's looks and here).
  std::erase_if(runnable_, [this](const Runnable& r) { return !threads_.contains(r.tid); });
  const int here = sched_getcpu();
  auto rank = [&](const Runnable& r) {
    const ThreadState& ts = threads_.find(r.tid)->second;
    const bool must = ts.wall_owed_ns + r.pending.sample.wall_ns > kMaxOwedNs;
    const bool elsewhere = ts.processor != here;
    return std::tuple(must, elsewhere, ts.ticks_owed);
  };
  std::stable_sort(runnable_.begin(), runnable_.end(),
                   [&](const Runnable& a, const Runnable& b) { return rank(a) > rank(b); });
  size_t stops = 0;
  for (Runnable& r : runnable_) {
    ThreadState& ts = threads_.find(r.tid)->second;
    ThreadSample& s = r.pending.sample;
    if (stops < stop_budget_ || ts.wall_owed_ns + s.wall_ns > kMaxOwedNs) {
      s.wall_ns += std::exchange(ts.wall_owed_ns, 0);
      s.ticks += std::exchange(ts.ticks_owed, 0);
      ++stops;
      request(r.tid, std::move(r.pending));
    } else {
      ts.wall_owed_ns += s.wall_ns;
      ++ts.ticks_owed;
      ++res_.ticks_owed;
    }
  }
  runnable_.clear();
}

bool SamplingSession::tick_from_switches(pid_t tid, ThreadState& ts, ThreadSample& s) {
  const RunState rs = perf_->run_state(tid);
  const bool ran = rs.ins != ts.seen_ins;
  ts.seen_ins = rs.ins;
  if (!rs.known || !ts.have_stack || ts.verify_by_reads) {
    ts.verify_by_reads = false;
    return false;
  }
  if (!ran && !rs.runnable) {
    // Asleep since its last look: on the same stack. The reads' idle backoff is not needed
    // here (this look costs no syscall).
    reuse(tid, s, ts);
    return true;
  }
  if (!rs.runnable) {
    return false;  // ran, then slept: its new stack needs a stop (the reads decide)
  }
  ts.state = 'R';
  return wall_from_held(ts, s, std::nullopt);
}

bool SamplingSession::tick_from_timer_page(pid_t tid, ThreadState& ts, ThreadSample& s) {
  const std::optional<uint32_t> ins = timer_->sched_ins(tid);
  if (!ins) {
    return false;
  }
  const bool moved = ts.seen_sched_ins != ins;
  // Taken before this tick's reads (if any): a trip onto a CPU after them shows next tick.
  ts.seen_sched_ins = ins;
  if (moved) {
    ts.idle_skip = 0;  // it was on a CPU since: looked at now, not at its backoff's next turn
    return false;
  }
  // Asleep at its last look (state from /proc then) and not scheduled in since: nothing of
  // it can have changed. A running thread, or one waiting for a CPU, is not settled here: it
  // may run without ever being scheduled in again.
  if (!ts.have_stack || ts.held || ts.state == 'R') {
    return false;
  }
  reuse(tid, s, ts);
  return true;
}

void SamplingSession::read_state(pid_t tid, ThreadState& ts) {
  // Running or not is what most looks need, and the syscall file says it for a quarter of
  // stat's cost (18 us a read of a busy thread's stat here, 5 us of its syscall: no 52
  // fields to format). A running thread's stat is still read at its first look and every
  // kStatEvery after, for its name and CPU; any other state's letter comes from stat.
  // Blocked, the syscall file also says where (parked_on_last_stack).
  constexpr uint32_t kStatEvery = 16;
  ts.blocked_in.reset();
  if (ts.syscall.valid()) {
    if (auto text = pread_text(ts.syscall)) {
      if (text->starts_with("running")) {
        if (ts.running_looks++ % kStatEvery != 0) {
          ts.state = 'R';
          return;
        }
      } else {
        ts.blocked_in = parse_syscall(*text);
      }
    }
  }
  if (auto text = pread_text(ts.stat)) {
    if (auto st = parse_stat(*text)) {
      ts.name = st->comm;
      ts.state = st->state;
      ts.processor = st->processor;
    }
  }
  // 't' outside a job-control stop: the thread is in a stop of profctl's own whose event
  // is not handled yet (the CPU timer's signal stopped it while it ran): running.
  if (ts.state == 't' && !tp_.job_stopped(tid)) {
    ts.state = 'R';
  }
}

bool SamplingSession::parked_on_last_stack(pid_t tid, ThreadState& ts) {
  if (!ts.have_stack) {
    return false;
  }
  // Our own stop makes a sleeping thread run briefly (it leaves its syscall for the
  // ptrace-stop and restarts it), so its run time moves even when its code did not.
  // Blocked again in a syscall at the very sp and pc of its last snapshot, it is on
  // the same stack: reuse it without stopping it. A job-control-stopped thread ('t'
  // between our samples: it listens) runs no code at all: same.
  if (ts.state == 't' || ts.state == 'T') {
    return true;
  }
  if (ts.state != 'R') {
    auto sc = ts.blocked_in ? ts.blocked_in : read_task_syscall(ts.pid, tid);
    return sc && sc->sp == ts.last_sp && sc->pc == ts.last_pc;
  }
  return false;
}

void SamplingSession::on_sample(Snapshot& snap) {
  auto t = threads_.find(snap.tid);
  if (t == threads_.end()) {
    return;
  }
  if (auto s = read_schedstat(t->second.schedstat)) {
    t->second.run_at_stop_ns = s->run_ns;
    if (auto p = pending_.find(snap.tid); p != pending_.end()) {
      p->second.timeslices_at_stop = s->timeslices;
    }
  }
}

void SamplingSession::start_cpu_timer() {
  if (!opts_.cpu_timer || !opts_.sample) {
    res_.cpu_source = "ticks";
    return;
  }
  const auto period = static_cast<uint64_t>(1e9 / std::max(0.1, opts_.rate_hz));
  if (opts_.perf_records) {
    perf_ = std::make_unique<PerfSampler>(period, opts_.perf_stack_bytes);
    for (pid_t tid : tp_.tids()) {
      if (auto r = perf_->add(tid); !r) {
        res_.perf_error = r.error().message();
        perf_.reset();
        break;
      }
    }
    if (perf_) {
      res_.cpu_source = "perf records";
      return;
    }
  }
  timer_ = std::make_shared<CpuTimer>(period);
  for (pid_t tid : tp_.tids()) {
    if (auto r = timer_->add(tid); !r) {
      res_.cpu_timer_error = r.error().message();
      timer_.reset();
      res_.cpu_source = "ticks";
      return;
    }
  }
  res_.cpu_source = "cpu timer signals";
  tp_.add_observer(std::make_shared<TimerSignals>(timer_));
}

void SamplingSession::clock_add(pid_t tid) {
  if (perf_) {
    if (auto r = perf_->add(tid); !r && res_.perf_error.empty()) {
      res_.perf_error = r.error().message();  // this thread's CPU goes unsampled: said once
    }
  } else if (timer_) {
    (void)timer_->add(tid);
  }
}

void SamplingSession::clock_due(pid_t tid) {
  if (perf_ || timer_) {
    clock_due_.push_back(tid);
  }
}

void SamplingSession::arm_due_clocks() {
  std::vector<pid_t> due;
  due.swap(clock_due_);
  for (pid_t tid : due) {
    const pid_t pid = tp_.pid_of(tid);
    if (pid == 0) {
      continue;  // gone before its first tick (its tid may be another's by now)
    }
    ThreadState* ts = track(tid);
    if (ts == nullptr) {
      continue;  // exiting
    }
    if (perf_) {
      // ESRCH: it exited since (its exit is an event still to come): nothing is missing.
      if (auto r = perf_->add(tid); !r && r.error().err != ESRCH && res_.perf_error.empty()) {
        res_.perf_error = r.error().message();
      }
    } else {
      clock_add(tid);
    }
    if (perf_ && perf_->has(tid)) {
      // The clock counts from now: the CPU the thread used since it was born goes with
      // its first record (a timer's samples weigh schedstat's CPU and need nothing).
      const uint64_t run_ns = read_run_ns(ts->schedstat).value_or(0);
      ts->clock_unseen_ns = run_ns - std::min(run_ns, ts->cpu_mark_ns);
      tp_.note_space(pid, tp_.space_of(tid));  // records may come: its modules, while alive
    }
  }
}

void SamplingSession::clock_remove(pid_t tid) {
  if (perf_) {
    perf_->remove(tid, [this](PerfSample&& ps) { recorded(std::move(ps)); });
  } else if (timer_) {
    timer_->remove(tid);
  }
}

void SamplingSession::drain_records() {
  if (perf_) {
    perf_->drain_all([this](PerfSample&& ps) { recorded(std::move(ps)); });
    for (const auto& [pid, addr] : perf_->take_mapped()) {
      if (opts_.on_sample_pc) {
        opts_.on_sample_pc(pid, addr);  // a library mapped since: read while the process lives
      }
    }
    res_.perf_lost = perf_->lost();
    res_.perf_unusable = perf_->no_user_regs() + perf_->malformed() + old_image_unusable_;
  }
}

void SamplingSession::recorded(PerfSample&& ps, uint32_t space) {
  ThreadState* ts = track(ps.tid);
  ++res_.timer_samples;
  ++res_.records;
  ThreadSample s;
  s.tid = ps.tid;
  s.state = 'R';  // its CPU clock overflowed: it was on a CPU
  s.from_clock = true;
  s.time_ns = ps.time_ns;
  // The clock's own count since the thread's previous record: about one period, exactly
  // what the thread used whenever the overflow was taken.
  s.cpu_ns = ps.cpu_ns;
  if (ts != nullptr) {
    s.cpu_ns += std::exchange(ts->clock_unseen_ns, 0);
  }
  s.for_wall = false;
  ps.snap.space = space != 0 ? space : tp_.space_of(ps.tid);
  tp_.note_space(ps.pid, ps.snap.space);
  if (opts_.on_sample_pc) {
    opts_.on_sample_pc(ps.pid, ps.snap.regs.rip);
  }
  if (ts != nullptr) {
    s.name = name_of(*ts);
    stamp(s, *ts);
  } else {
    s.pid = ps.pid;
    s.space = ps.snap.space;
  }
  s.snap = std::move(ps.snap);
  hold(ts, std::move(s));
}

void SamplingSession::flush_records(pid_t tid, ThreadState& ts) {
  if (ts.held) {
    clock_only(std::move(*ts.held));
    ts.held.reset();
  }
  if (ts.ticks_owed > 0) {
    // The owed ticks found it running since its last wall sample, whose stack stands.
    ThreadSample s;
    s.tid = tid;
    s.time_ns = monotonic_ns();
    s.wall_ns = ts.wall_owed_ns;
    s.ticks = ts.ticks_owed;
    // Running ticks: the ticker's count them in the cpu profile's samples (no CPU time: that
    // goes with the thread's next fair stop); the clocks' samples make it otherwise.
    s.for_cpu = !perf_ && !timer_;
    reuse(tid, s, ts, 'R');
    ts.wall_owed_ns = 0;
    ts.ticks_owed = 0;
  }
}

// A running thread's place at a tick is a draw from where it spends its CPU, which is what
// its sample records are: the latest one (taken within the last tick of its CPU time) is its
// wall sample, with no stop. A tick that finds it running with no new record (it shares a
// CPU with others) owes its wall time to the next record, for at most kMaxOwed; a thread
// that is no longer running is sampled as any other (its place is where it waits).
bool SamplingSession::wall_from_record(pid_t tid, ThreadState& ts, ThreadSample& s,
                                       std::optional<uint64_t> run_ns) {
  read_state(tid, ts);
  if (ts.state != 'R') {
    flush_records(tid, ts);
    return false;
  }
  if (wall_from_held(ts, s, run_ns)) {
    return true;
  }
  flush_records(tid, ts);
  return false;
}

bool SamplingSession::wall_from_held(ThreadState& ts, ThreadSample& s,
                                     std::optional<uint64_t> run_ns) {
  if (ts.held) {
    ThreadSample& h = *ts.held;
    h.for_wall = true;
    h.wall_ns = s.wall_ns + ts.wall_owed_ns;
    h.ticks = 1 + ts.ticks_owed;
    h.name = ts.name;
    ts.wall_owed_ns = 0;
    ts.ticks_owed = 0;
    ts.have_stack = true;
    if (run_ns) {
      ts.last_run_ns = *run_ns;
    }
    ts.last_sp = h.snap->regs.rsp;
    ts.last_pc = h.snap->regs.rip;
    ts.idle_streak = 0;
    ++res_.wall_from_records;
    hand_merged(ts);
    sink_.on_sample(std::move(h));
    ts.held.reset();
    return true;
  }
  if (ts.have_stack && ts.wall_owed_ns + s.wall_ns <= kMaxOwedNs) {
    ts.wall_owed_ns += s.wall_ns;
    ++ts.ticks_owed;
    return true;
  }
  return false;
}

std::optional<SessionResult::End> SamplingSession::ending(
    Clock::time_point now, const std::atomic<bool>& stop,
    std::optional<Clock::time_point>& stop_by) {
  if (stop.load(std::memory_order_relaxed)) {
    if (!stop_by) {
      stop_by = now + opts_.stop_grace;
    }
    if (now >= *stop_by) {
      return SessionResult::End::kInterrupted;
    }
  }
  if (opts_.duration && now - start_ >= *opts_.duration) {
    return SessionResult::End::kDuration;
  }
  return std::nullopt;
}

void SamplingSession::report_status(Clock::time_point now) {
  SessionStatus st;
  st.elapsed_s = std::chrono::duration<double>(now - start_).count();
  st.duration_s = opts_.duration ? std::chrono::duration<double>(*opts_.duration).count() : 0.0;
  st.ticks = res_.ticks;
  uint64_t cpu_ns = 0;
  for (const auto& [tid, ts] : threads_) {
    cpu_ns += ts.seen_run_ns - std::min(ts.seen_run_ns, ts.start_run_ns);
  }
  st.cpu_s = static_cast<double>(cpu_ns) / 1e9;
  st.processes = tp_.process_count();
  st.samples = res_.samples;
  st.threads = tp_.thread_count();
  for (auto& [tid, ts] : threads_) {
    hand_merged(ts);  // the live view sees every tick so far
  }
  opts_.on_status(st);
}

SessionResult SamplingSession::run(const std::atomic<bool>& stop) {
  tp_.set_stack_bytes(opts_.stack_bytes);
  tp_.add_observer(unowned(*this));
  start_cpu_timer();
  struct Unhook {
    SamplingSession& s;
    ~Unhook() {
      s.tp_.remove_observer(&s);
      // No more timer signals: the events go with their fds. One already raised is still
      // ours to take while the target is traced (TimerSignals stays until the detach).
      if (s.timer_) {
        s.timer_->disable();
      }
      if (s.perf_) {
        s.perf_->disable();
      }
    }
  } unhook{*this};
  // The sampling thread blocks in its wait or sleeps; at FIFO priority the stop of a
  // thread it interrupted wakes it at once, instead of after some busy thread's slice.
  ScopedRealtime realtime;
  stop_budget_ = cpus_of(tp_.pid());
  if (opts_.on_clocks_set) {
    opts_.on_clocks_set();
  }
  start_ = Clock::now();
  const auto interval =
      std::chrono::nanoseconds(static_cast<int64_t>(1e9 / std::max(0.1, opts_.rate_hz)));
  auto next_tick = start_;
  constexpr auto kIdleRecheck = std::chrono::milliseconds(25);
  idle_recheck_ticks_ = static_cast<uint64_t>(std::max<int64_t>(1, kIdleRecheck / interval));
  auto next_status = start_;
  auto next_maps_check = start_;

  std::optional<Clock::time_point> stop_by;
  for (;;) {
    auto now = Clock::now();
    if (auto end = ending(now, stop, stop_by)) {
      return finish(*end);
    }
    if (opts_.on_status && now >= next_status) {
      report_status(now);
      next_status = now + std::chrono::milliseconds(250);
    }
    if (opts_.on_maps_check && now >= next_maps_check) {
      opts_.on_maps_check();
      next_maps_check = now + std::chrono::milliseconds(100);
    }

    // Serve the target's events until the next tick.
    auto wake = opts_.sample ? next_tick : now + std::chrono::milliseconds(100);
    if (opts_.duration) {
      wake = std::min(wake, start_ + *opts_.duration);
    }
    if (stop_by) {
      wake = std::min(wake, *stop_by);
    }
    // To the nanosecond: a wait rounded to milliseconds ended early and left the last
    // fraction of a millisecond before each tick to a sleep that served no stop.
    auto left = std::chrono::duration_cast<std::chrono::nanoseconds>(wake - now);
    auto ev = tp_.next_event(std::max(left, std::chrono::nanoseconds(0)), opts_.stack_bytes);
    if (ev) {
      if (auto end = dispatch(*ev)) {
        return finish(*end);
      }
    }
    now = Clock::now();
    if (ev && (!opts_.sample || now < next_tick)) {
      continue;  // more events may be waiting; a stream of them never starves the ticks
    }
    if (!opts_.sample || now < next_tick) {
      continue;
    }
    next_tick += interval;
    if (next_tick < now) {
      next_tick = now + interval;  // fell behind: skip ticks rather than burst
    }
    tick();
  }
}

}  // namespace profctl
