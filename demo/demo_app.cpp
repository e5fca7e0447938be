// SPDX-License-Identifier: MIT
// profctl-demo: a small multi-threaded workload for the README's quick start. A pool of
// named workers takes jobs from a queue (condition variable), one thread crunches numbers
// through a recursive search, one sleeps on a timer, one holds a lock others contend for.
// It prints "ready <pid>" once every thread is running, then runs until killed.
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace demo {

std::mutex queue_mu;
std::condition_variable queue_cv;
std::deque<int> jobs;
std::mutex ledger_mu;
std::atomic<long> ledger{0};
std::atomic<int> started{0};

void name_self(const char* name) { pthread_setname_np(pthread_self(), name); }

__attribute__((noinline)) long collatz_steps(long n) {
  long steps = 0;
  while (n != 1) {
    n = (n % 2) ? 3 * n + 1 : n / 2;
    ++steps;
  }
  return steps;
}

__attribute__((noinline)) long search(int depth, long seed) {
  if (depth == 0) {
    return collatz_steps(seed);
  }
  long r = search(depth - 1, seed * 2 + 1);
  asm volatile("" ::: "memory");
  return r;
}

class Worker {
 public:
  explicit Worker(int id) : id_(id) {}
  __attribute__((noinline)) void run() {
    char name[16];
    std::snprintf(name, sizeof name, "worker-%d", id_);
    name_self(name);
    started++;
    for (;;) {
      int job = take_job();
      process(job);
    }
  }

 private:
  __attribute__((noinline)) int take_job() {
    std::unique_lock lock(queue_mu);
    queue_cv.wait(lock, [] { return !jobs.empty(); });
    int j = jobs.front();
    jobs.pop_front();
    return j;
  }
  __attribute__((noinline)) void process(int job) {
    long v = search(8, job);
    std::lock_guard lock(ledger_mu);
    ledger += v;
  }
  int id_;
};

__attribute__((noinline)) void producer() {
  name_self("producer");
  started++;
  for (int i = 1;; ++i) {
    {
      std::lock_guard lock(queue_mu);
      jobs.push_back(i);
    }
    queue_cv.notify_one();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

__attribute__((noinline)) void cruncher() {
  name_self("cruncher");
  started++;
  for (long seed = 1;; ++seed) {
    ledger += search(20, seed);
  }
}

__attribute__((noinline)) void auditor() {
  name_self("auditor");
  started++;
  for (;;) {
    std::lock_guard lock(ledger_mu);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // holds the lock: contention
  }
}

}  // namespace demo

int main() {
  std::vector<std::thread> threads;
  std::vector<demo::Worker> workers;
  workers.reserve(3);
  for (int i = 0; i < 3; ++i) {
    workers.emplace_back(i);
  }
  for (auto& w : workers) {
    threads.emplace_back(&demo::Worker::run, &w);
  }
  threads.emplace_back(demo::producer);
  threads.emplace_back(demo::cruncher);
  threads.emplace_back(demo::auditor);
  while (demo::started.load() < 6) {
    std::this_thread::yield();
  }
  std::printf("ready %d\n", getpid());
  std::fflush(stdout);
  for (auto& t : threads) {
    t.join();
  }
}
