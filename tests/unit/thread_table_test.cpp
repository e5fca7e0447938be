// SPDX-License-Identifier: MIT
// ThreadTable: every wait status moves a thread to exactly one state, and the transitions
// that once froze or hung targets (issue: attach/ under job control and churn) stay fixed.
#include "attach/thread_table.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/ptrace.h>

namespace profctl {
namespace {

// waitpid encodings.
WaitStatus stop_status(int sig, int event = 0) {
  return WaitStatus(0x7f | (sig << 8) | (event << 16));
}
WaitStatus exited(int code) { return WaitStatus((code & 0xff) << 8); }
WaitStatus group_stop(int sig = SIGSTOP) { return stop_status(sig, PTRACE_EVENT_STOP); }
WaitStatus event_stop() { return stop_status(SIGTRAP, PTRACE_EVENT_STOP); }
WaitStatus clone_event() { return stop_status(SIGTRAP, PTRACE_EVENT_CLONE); }

TEST(ThreadTable, AnInterruptStopMakesARunningThreadStopped) {
  ThreadTable t;
  t.add(10, TState::kRunning);
  t.interrupted(10);
  EXPECT_EQ(t.awaiting_stop(), 1u);
  Transition tr = t.apply(10, event_stop());
  EXPECT_EQ(tr.what, Transition::What::kStopped);
  EXPECT_EQ(tr.before, TState::kInterrupted);
  EXPECT_EQ(t.find(10)->state, TState::kStopped);
  EXPECT_EQ(t.awaiting_stop(), 0u);
}

TEST(ThreadTable, TheStopThatEndsAListeningGroupStopClearsTheGroupStop) {
  // The job-control freeze: a group-stop flag that outlived SIGCONT made the next resume a
  // PTRACE_LISTEN, and the thread never ran again.
  ThreadTable t;
  t.add(10, TState::kRunning);
  t.apply(10, group_stop());
  EXPECT_TRUE(t.find(10)->group_stop);
  t.resumed(10, /*listening=*/true);
  EXPECT_EQ(t.find(10)->state, TState::kListening);
  t.interrupted(10);          // a sample asked for while it listens
  t.apply(10, event_stop());  // SIGCONT came: the stop reports SIGTRAP, not the stop signal
  EXPECT_FALSE(t.find(10)->group_stop);
  EXPECT_EQ(t.find(10)->state, TState::kStopped);
}

TEST(ThreadTable, AnInterruptOfAStillStoppedGroupKeepsTheGroupStop) {
  ThreadTable t;
  t.add(10, TState::kRunning);
  t.apply(10, group_stop(SIGTSTP));
  t.resumed(10, true);
  t.interrupted(10);
  Transition tr = t.apply(10, group_stop(SIGTSTP));
  EXPECT_EQ(tr.what, Transition::What::kGroupStop);
  EXPECT_TRUE(t.find(10)->group_stop);
}

TEST(ThreadTable, ASignalStopIsKeptForRedeliveryAndLeftInTheKernel) {
  ThreadTable t;
  t.add(10, TState::kRunning);
  Transition tr = t.apply(10, stop_status(SIGUSR1));
  EXPECT_EQ(tr.what, Transition::What::kSignal);
  EXPECT_EQ(tr.signal, SIGUSR1);
  EXPECT_EQ(t.find(10)->pending_signal, SIGUSR1);
  EXPECT_TRUE(t.find(10)->signal_in_kernel);
  t.resumed(10, false);
  EXPECT_EQ(t.find(10)->pending_signal, 0);
  EXPECT_FALSE(t.find(10)->signal_in_kernel);
}

TEST(ThreadTable, ALateCloneEventDoesNotBringBackAThreadThatExited) {
  // The churn hang: a thread that had already exited was re-added by its creator's late
  // PTRACE_EVENT_CLONE, and the final stop waited for it until its timeout.
  ThreadTable t;
  t.add(10, TState::kRunning);
  // The child's first stop comes before its creator's event, then it exits.
  t.apply(11, event_stop(), /*same_group=*/true);
  EXPECT_EQ(t.find(11)->state, TState::kStopped);
  EXPECT_EQ(t.apply(11, exited(0)).what, Transition::What::kExited);
  EXPECT_EQ(t.find(11), nullptr);
  t.apply(10, clone_event());
  t.add_clone_child(11);
  EXPECT_EQ(t.find(11), nullptr);
  EXPECT_EQ(t.awaiting_stop(), 0u);
}

TEST(ThreadTable, ACloneChildIsAwaitedUntilItsFirstStop) {
  ThreadTable t;
  t.add(10, TState::kRunning);
  t.add_clone_child(12);
  EXPECT_EQ(t.find(12)->state, TState::kNew);
  EXPECT_EQ(t.awaiting_stop(), 1u);
  Transition tr = t.apply(12, event_stop());
  EXPECT_TRUE(tr.first_stop);
  EXPECT_EQ(t.awaiting_stop(), 0u);
}

TEST(ThreadTable, AStopOfAnUnknownTidOutsideTheGroupIsNotOurs) {
  // A process (fork, clone without CLONE_THREAD) a traced thread created: not a thread.
  ThreadTable t;
  t.add(10, TState::kRunning);
  EXPECT_EQ(t.apply(20, event_stop(), /*same_group=*/false).what, Transition::What::kNotOurs);
  EXPECT_EQ(t.find(20), nullptr);
}

TEST(ThreadTable, ExitingThreadsAreNotAwaitedAndAReusedTidIsANewThread) {
  ThreadTable t;
  t.add(10, TState::kRunning);
  t.interrupted(10);
  t.exiting(10);  // ESRCH
  EXPECT_EQ(t.awaiting_stop(), 0u);
  t.apply(10, exited(0));
  EXPECT_TRUE(t.gone(10));
  t.add(10, TState::kRunning);  // the kernel reused the tid
  EXPECT_FALSE(t.gone(10));
  EXPECT_EQ(t.find(10)->state, TState::kRunning);
}

TEST(ThreadTable, GoneTidsAreRememberedBoundedly) {
  ThreadTable t(/*remember_gone=*/4);
  for (pid_t tid = 100; tid < 110; ++tid) {
    t.apply(tid, exited(0));
  }
  EXPECT_FALSE(t.gone(100));
  EXPECT_TRUE(t.gone(109));
}

TEST(ThreadTable, ABreakpointTrapLeavesNoSignalToRedeliver) {
  // profctl's own int3 (the probes' fallback, run's entry breakpoint): the SIGTRAP is not
  // the target's and must not be re-injected at the resume.
  ThreadTable t;
  t.add(10, TState::kRunning);
  ASSERT_EQ(t.apply(10, stop_status(SIGTRAP)).what, Transition::What::kSignal);
  EXPECT_EQ(t.find(10)->pending_signal, SIGTRAP);
  t.breakpoint_trap(10);
  EXPECT_EQ(t.find(10)->state, TState::kStopped);
  EXPECT_EQ(t.find(10)->pending_signal, 0);
  EXPECT_FALSE(t.find(10)->signal_in_kernel);
  EXPECT_FALSE(t.take_timer_stop(10));  // a breakpoint is no sample
}

TEST(ThreadTable, ATimerSignalIsNotRedeliveredAndMakesTheStopASampleOnce) {
  ThreadTable t;
  t.add(10, TState::kRunning);
  t.apply(10, stop_status(SIGPROF));
  t.timer_signal(10);
  EXPECT_EQ(t.find(10)->state, TState::kStopped);
  EXPECT_EQ(t.find(10)->pending_signal, 0);
  EXPECT_FALSE(t.find(10)->signal_in_kernel);
  EXPECT_TRUE(t.take_timer_stop(10));
  EXPECT_FALSE(t.take_timer_stop(10));
}

TEST(ThreadTable, ATimerStopIsASampleOnlyForTheStatusThatReportedIt) {
  // A timer stop another path consumed (a world stop) must not turn the thread's next event
  // into a sample.
  ThreadTable t;
  t.add(10, TState::kRunning);
  t.apply(10, stop_status(SIGPROF));
  t.timer_signal(10);
  t.resumed(10, false);
  Transition tr = t.apply(10, clone_event());
  EXPECT_EQ(tr.what, Transition::What::kPtraceEvent);
  EXPECT_EQ(tr.event, PTRACE_EVENT_CLONE);
  EXPECT_FALSE(t.take_timer_stop(10));
}

TEST(ThreadTable, ASampleRequestStandsAcrossResumesUntilTaken) {
  ThreadTable t;
  t.add(10, TState::kRunning);
  t.sample_requested(10, 1234);
  t.interrupted(10);
  t.apply(10, stop_status(SIGUSR1));  // a signal came first: the request still stands
  t.resumed(10, false);
  EXPECT_EQ(t.find(10)->sample_requested_ns, 1234u);
  t.interrupted(10);
  t.apply(10, event_stop());
  EXPECT_EQ(t.sample_taken(10), 1234u);
  EXPECT_EQ(t.find(10)->sample_requested_ns, 0u);
  EXPECT_EQ(t.sample_taken(10), 0u);  // none pending
}

TEST(ThreadTable, ForgetAndClearDropThreadsAndTheStopsAwaitedOfThem) {
  ThreadTable t;
  t.add(10, TState::kRunning);
  t.add(11, TState::kRunning);
  t.interrupted(10);
  t.interrupted(11);
  EXPECT_EQ(t.awaiting_stop(), 2u);
  t.forget(10);  // detached
  EXPECT_EQ(t.find(10), nullptr);
  EXPECT_FALSE(t.gone(10));  // not exited: a status of it would be news
  EXPECT_EQ(t.awaiting_stop(), 1u);
  t.clear();  // exec
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(t.awaiting_stop(), 0u);
}

TEST(ThreadTable, TransitionsOfAnUnknownThreadChangeNothing) {
  ThreadTable t;
  t.breakpoint_trap(99);
  t.timer_signal(99);
  t.sample_requested(99, 1);
  t.resumed(99, false);
  t.interrupted(99);
  t.exiting(99);
  EXPECT_FALSE(t.take_timer_stop(99));
  EXPECT_EQ(t.sample_taken(99), 0u);
  EXPECT_TRUE(t.empty());
  EXPECT_EQ(t.awaiting_stop(), 0u);
}

}  // namespace
}  // namespace profctl
