// SPDX-License-Identifier: MIT
// BoundedWorker (profile/bounded_worker.h), the queue + worker thread every collector uses:
// bounds in items and bytes, drops counted, items handled in push order on the worker
// thread with the context its factory made there, and finish() draining before it joins.
// A gate held shut in the factory keeps the worker from taking items, so that the queue
// fills exactly as the test says.
#include "profile/bounded_worker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <thread>
#include <vector>

namespace profctl {
namespace {

struct Context {
  std::thread::id made_on;
  std::vector<int> seen;  // items handled, in order
  std::vector<std::thread::id> handled_on;
};
// Shared, so that the test can read the context after the worker destroyed its own.
using Worker = BoundedWorker<int, std::shared_ptr<Context>>;

// The item is its own weight in bytes.
size_t weight(const int& item) { return static_cast<size_t>(item); }

// A worker whose factory waits for the gate; `handled` counts items as the worker handles
// them.
struct Harness {
  std::promise<void> gate;
  bool released = false;
  std::shared_ptr<Context> ctx;  // written by the factory, read once the worker finished
  std::atomic<size_t> handled{0};
  std::unique_ptr<Worker> worker;

  explicit Harness(Worker::Limits limits, Worker::BytesOf bytes_of = nullptr) {
    std::shared_future<void> open = gate.get_future().share();
    worker = std::make_unique<Worker>(
        limits, bytes_of,
        [this, open] {
          open.wait();
          auto c = std::make_shared<Context>();
          c->made_on = std::this_thread::get_id();
          ctx = c;
          return c;
        },
        [this](std::shared_ptr<Context>& c, int& item) {
          c->seen.push_back(item);
          c->handled_on.push_back(std::this_thread::get_id());
          handled.fetch_add(1, std::memory_order_release);
        });
  }
  ~Harness() {
    release();
    worker.reset();
  }
  Harness(const Harness&) = delete;
  Harness& operator=(const Harness&) = delete;
  void release() {
    if (!released) {
      gate.set_value();
      released = true;
    }
  }
};

TEST(BoundedWorker, BoundedInItemsDropsAndCountsTheRest) {
  Harness h({.max_items = 3});
  std::vector<bool> accepted;
  accepted.reserve(10);
  for (int i = 0; i < 10; ++i) {
    accepted.push_back(h.worker->try_push(int{i}));
  }
  EXPECT_EQ(accepted,
            (std::vector<bool>{true, true, true, false, false, false, false, false, false, false}));
  h.release();
  EXPECT_TRUE(h.worker->finish());
  EXPECT_EQ(h.ctx->seen, (std::vector<int>{0, 1, 2}));
  const Worker::Stats s = h.worker->stats();
  EXPECT_EQ(s.dropped, 7u);
  EXPECT_EQ(s.max_items, 3u);
}

TEST(BoundedWorker, BoundedInBytesAnItemThatDoesNotFitIsDropped) {
  Harness h({.max_items = 100, .max_bytes = 10}, &weight);
  EXPECT_TRUE(h.worker->try_push(4));
  EXPECT_TRUE(h.worker->try_push(5));   // 9 bytes queued
  EXPECT_FALSE(h.worker->try_push(2));  // 11 would pass the bound
  EXPECT_TRUE(h.worker->try_push(1));   // exactly 10 fits
  EXPECT_TRUE(h.worker->try_push(0)) << "a weightless item is bounded by the item count only";
  EXPECT_FALSE(h.worker->try_push(1));
  h.release();
  h.worker->finish();
  EXPECT_EQ(h.ctx->seen, (std::vector<int>{4, 5, 1, 0}));
  const Worker::Stats s = h.worker->stats();
  EXPECT_EQ(s.dropped, 2u);
  EXPECT_EQ(s.max_bytes, 10u);
  EXPECT_EQ(s.max_items, 4u);
}

TEST(BoundedWorker, BytesAreGivenBackAsItemsAreHandled) {
  Harness h({.max_items = 100, .max_bytes = 10}, &weight);
  h.release();
  // Each push waits until the worker has handled the one before: 100 bytes pass through a
  // queue bounded at 10, none dropped.
  for (size_t i = 0; i < 10; ++i) {
    ASSERT_TRUE(h.worker->try_push(10)) << "push " << i;
    while (h.handled.load(std::memory_order_acquire) < i + 1) {
      std::this_thread::yield();
    }
  }
  h.worker->finish();
  EXPECT_EQ(h.worker->stats().dropped, 0u);
  EXPECT_EQ(h.worker->stats().max_bytes, 10u);
  EXPECT_EQ(h.ctx->seen.size(), 10u);
}

TEST(BoundedWorker, PushIsNeverDroppedEvenPastTheBounds) {
  Harness h({.max_items = 2, .max_bytes = 3}, &weight);
  for (int i = 1; i <= 5; ++i) {
    h.worker->push(int{i});
  }
  EXPECT_FALSE(h.worker->try_push(1)) << "the queue is over its bounds: droppable items go";
  h.release();
  h.worker->finish();
  EXPECT_EQ(h.ctx->seen, (std::vector<int>{1, 2, 3, 4, 5}));
  const Worker::Stats s = h.worker->stats();
  EXPECT_EQ(s.dropped, 1u);
  EXPECT_EQ(s.max_items, 5u);
  EXPECT_EQ(s.max_bytes, 15u);
}

TEST(BoundedWorker, FinishDrainsEverythingQueuedInPushOrder) {
  Harness h({.max_items = 1000});
  std::vector<int> want;
  want.reserve(1000);
  for (int i = 0; i < 1000; ++i) {
    ASSERT_TRUE(h.worker->try_push(i * 7 % 1000));
    want.push_back(i * 7 % 1000);
  }
  h.release();
  EXPECT_TRUE(h.worker->finish());
  EXPECT_EQ(h.ctx->seen, want);
  EXPECT_FALSE(h.worker->finish()) << "a second finish is a no-op";
  EXPECT_EQ(h.ctx->seen.size(), 1000u);
}

TEST(BoundedWorker, FactoryAndHandlerRunOnTheWorkerThread) {
  Harness h({});
  h.release();
  for (int i = 0; i < 3; ++i) {
    h.worker->push(int{i});
  }
  h.worker->finish();
  ASSERT_NE(h.ctx, nullptr);
  EXPECT_NE(h.ctx->made_on, std::this_thread::get_id());
  EXPECT_EQ(h.ctx->handled_on,
            (std::vector<std::thread::id>{h.ctx->made_on, h.ctx->made_on, h.ctx->made_on}))
      << "every item is handled with the factory's context, on the thread that made it";
}

// handle_here: a producer handles items itself, on its own thread, only when the worker
// holds nothing (queued or in hand), so that push order is kept across both paths.
TEST(BoundedWorker, HandleHereRunsOnTheCallerOnlyWhenTheWorkerHoldsNothing) {
  Harness h({});
  for (int i = 0; i < 3; ++i) {
    h.worker->push(int{i});
  }
  std::vector<std::thread::id> direct_on;
  auto direct = [&](int& item) {
    h.ctx->seen.push_back(item);
    direct_on.push_back(std::this_thread::get_id());
  };
  std::vector<int> batch = {10, 11};
  EXPECT_FALSE(h.worker->handle_here(batch, direct)) << "items are queued before these";
  EXPECT_EQ(batch, (std::vector<int>{10, 11})) << "a refused batch is left as it was";
  h.release();
  // The worker has taken and handled the three (and given them back) at some point.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  bool handled_here = false;
  while (!handled_here && std::chrono::steady_clock::now() < deadline) {
    if (h.handled.load(std::memory_order_acquire) == 3) {
      handled_here = h.worker->handle_here(batch, direct);
    }
    std::this_thread::yield();
  }
  ASSERT_TRUE(handled_here);
  EXPECT_TRUE(batch.empty());
  EXPECT_EQ(direct_on,
            (std::vector<std::thread::id>{std::this_thread::get_id(), std::this_thread::get_id()}));
  h.worker->push(int{20});
  h.worker->push(int{21});
  h.worker->finish();
  EXPECT_EQ(h.ctx->seen, (std::vector<int>{0, 1, 2, 10, 11, 20, 21}));
  EXPECT_EQ(h.handled.load(), 5u) << "the worker handled only what was queued";
}

TEST(BoundedWorker, DestructionWithoutFinishStillDrains) {
  auto handled = std::make_shared<std::vector<int>>();
  {
    Worker w(
        {}, nullptr, [handled] { return std::make_shared<Context>(); },
        [handled](std::shared_ptr<Context>&, int& item) { handled->push_back(item); });
    for (int i = 0; i < 100; ++i) {
      w.push(int{i});
    }
  }
  ASSERT_EQ(handled->size(), 100u);
  EXPECT_EQ(handled->front(), 0);
  EXPECT_EQ(handled->back(), 99);
}

}  // namespace
}  // namespace profctl
