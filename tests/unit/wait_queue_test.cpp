// SPDX-License-Identifier: MIT
// WaitQueue: the capture's one queue hands events out in order, an event put back first.
#include "attach/wait_queue.h"

#include <gtest/gtest.h>

#include <variant>

namespace profctl {
namespace {

pid_t tid_of(const std::optional<WaitQueue::Entry>& e) {
  if (!e || !std::holds_alternative<TraceEvent>(*e)) {
    return -1;
  }
  return std::get<TraceEvent>(*e).tid;
}

TEST(WaitQueue, EventsComeOutInOrderAndOnePutBackComesFirst) {
  WaitQueue q;
  q.push_back(TraceEvent(TraceEvent::Kind::kSignal, 1));
  q.push_back(TraceEvent(TraceEvent::Kind::kSample, 2));
  q.push_front(TraceEvent(TraceEvent::Kind::kExec, 3));
  EXPECT_EQ(tid_of(q.next(std::chrono::milliseconds(0))), 3);
  EXPECT_EQ(tid_of(q.next(std::chrono::milliseconds(0))), 1);
  EXPECT_EQ(tid_of(q.next(std::chrono::milliseconds(0))), 2);
}

}  // namespace
}  // namespace profctl
