// The worker pool (SPEC sections 2, 5 and 8): one device's jobs one at a time in arrival order,
// different devices in parallel, the max_waiting bound answered false, and stop() draining until
// its deadline, then abandoning what still waits and joining what runs. The threads are real, so
// scripts/sanitize.sh tsan runs these under ThreadSanitizer too.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dispatch/worker_pool.hpp"
#include "test_support.hpp"

namespace pa {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// Every wait on another thread is bounded by this: a pool that never runs a job fails the test
// instead of hanging it.
constexpr auto kBound = 10s;

// A one-shot event: open() once, wait() from any thread, bounded.
class Gate {
 public:
  void open() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }
  // true when the gate opened within kBound.
  bool wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    return cv_.wait_for(lock, kBound, [this] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

// Polls `condition` (the pool's counters have no waiting call of their own) up to kBound.
bool eventually(const std::function<bool()>& condition) {
  const auto deadline = Clock::now() + kBound;
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// What jobs record, from any worker thread.
class Journal {
 public:
  void add(const std::string& entry) {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.push_back(entry);
  }
  std::vector<std::string> entries() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return entries_;
  }
  std::vector<std::string> of(char device) const {
    std::vector<std::string> matching;
    for (const auto& entry : entries())
      if (entry[0] == device) matching.push_back(entry);
    return matching;
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::string> entries_;
};

TEST(WorkerPool, OneDevicesJobsRunOneAtATimeInArrivalOrder) {
  WorkerPool pool(4, 1000);
  Journal journal;
  // Per device: how many of its jobs run right now; never more than one.
  std::atomic<int> running_a{0}, running_b{0}, overlaps{0};
  auto job = [&](std::atomic<int>& running, std::string entry) {
    return [&running, &overlaps, &journal, entry] {
      if (running.fetch_add(1) != 0) ++overlaps;
      std::this_thread::yield();  // give another worker the chance to overlap, if it may
      journal.add(entry);
      running.fetch_sub(1);
    };
  };
  constexpr int kJobs = 200;
  std::vector<std::string> expected_a, expected_b;
  for (int i = 0; i < kJobs; ++i) {
    expected_a.push_back("a" + std::to_string(i));
    expected_b.push_back("b" + std::to_string(i));
    ASSERT_TRUE(pool.submit("pH-a", job(running_a, expected_a.back())));
    ASSERT_TRUE(pool.submit("pH-b", job(running_b, expected_b.back())));
  }
  EXPECT_EQ(pool.stop(Clock::now() + kBound), 0u) << "jobs were still waiting at the deadline";
  EXPECT_EQ(overlaps.load(), 0) << "two jobs of one device ran at the same time";
  EXPECT_EQ(journal.of('a'), expected_a);
  EXPECT_EQ(journal.of('b'), expected_b);
  EXPECT_EQ(pool.served(), 2u * kJobs);
}

TEST(WorkerPool, DifferentDevicesRunInParallel) {
  WorkerPool pool(2, 10);
  // Each job waits for the other to start: with one device at a time neither gate opens and
  // both waits end at kBound.
  Gate a_started, b_started;
  std::atomic<bool> a_saw_b{false}, b_saw_a{false};
  ASSERT_TRUE(pool.submit("pH-a", [&] {
    a_started.open();
    a_saw_b = b_started.wait();
  }));
  ASSERT_TRUE(pool.submit("pH-b", [&] {
    b_started.open();
    b_saw_a = a_started.wait();
  }));
  EXPECT_EQ(pool.stop(Clock::now() + 2 * kBound), 0u);
  EXPECT_TRUE(a_saw_b) << "device b's job did not start while device a's ran";
  EXPECT_TRUE(b_saw_a) << "device a's job did not start while device b's ran";
}

TEST(WorkerPool, BeyondMaxWaitingSubmitAnswersFalseAndTheJobNeverRuns) {
  constexpr std::size_t kMaxWaiting = 3;
  WorkerPool pool(1, kMaxWaiting);
  Gate started, release;
  Journal journal;
  ASSERT_TRUE(pool.submit("pH01", [&] {
    started.open();
    release.wait();
    journal.add("running");
  }));
  // The running job is not waiting: the bound counts only queued jobs.
  ASSERT_TRUE(started.wait());
  EXPECT_EQ(pool.waiting(), 0u);
  for (std::size_t i = 0; i < kMaxWaiting; ++i)
    EXPECT_TRUE(pool.submit(i % 2 ? "pH01" : "pH02", [&, i] { journal.add(std::to_string(i)); }))
        << "job " << i << " is within the bound";
  EXPECT_EQ(pool.waiting(), kMaxWaiting);
  // The bound holds for every device, also one with nothing queued yet.
  EXPECT_FALSE(pool.submit("pH01", [&] { journal.add("refused-1"); }));
  EXPECT_FALSE(pool.submit("pH03", [&] { journal.add("refused-3"); }));
  EXPECT_EQ(pool.waiting(), kMaxWaiting);

  release.open();
  // Room again once the queue moves.
  ASSERT_TRUE(eventually([&] { return pool.waiting() < kMaxWaiting; }));
  EXPECT_TRUE(pool.submit("pH03", [&] { journal.add("after"); }));
  EXPECT_EQ(pool.stop(Clock::now() + kBound), 0u);

  auto entries = journal.entries();
  std::sort(entries.begin(), entries.end());
  EXPECT_EQ(entries, (std::vector<std::string>{"0", "1", "2", "after", "running"}));
  EXPECT_EQ(pool.served(), kMaxWaiting + 2);
}

TEST(WorkerPool, StopFinishesQueuedJobsBeforeTheDeadline) {
  WorkerPool pool(2, 100000);  // the bound is not what refuses the probes below
  Gate release;
  std::atomic<int> done{0};
  ASSERT_TRUE(pool.submit("pH01", [&] {
    release.wait();
    ++done;
  }));
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(pool.submit(i % 2 ? "pH01" : "pH02", [&] { ++done; }));
  // stop() stops taking jobs at once, and waits for the queue to empty. Until the stopping
  // thread gets there, probes are still taken (and run).
  std::thread stopper(
      [&] { EXPECT_EQ(pool.stop(Clock::now() + 3 * kBound), 0u) << "a queued job was abandoned"; });
  std::atomic<int> probes_ran{0};
  std::size_t probes_taken = 0;
  const bool refused = eventually([&] {
    if (!pool.submit("pH03", [&] { ++probes_ran; })) return true;
    ++probes_taken;
    return false;
  });
  release.open();
  stopper.join();
  EXPECT_TRUE(refused) << "the pool still takes jobs while stopping";
  EXPECT_EQ(done.load(), 21);
  EXPECT_EQ(probes_ran.load(), static_cast<int>(probes_taken)) << "a job taken was not run";
  EXPECT_EQ(pool.served(), 21u + probes_taken);
  EXPECT_FALSE(pool.submit("pH01", [&] { ++done; })) << "a stopped pool took a job";
}

TEST(WorkerPool, StopAtTheDeadlineAbandonsQueuedJobsAndJoinsRunningOnes) {
  WorkerPool pool(1, 100);
  Gate started, release;
  std::atomic<bool> running_finished{false};
  std::atomic<int> queued_ran{0};
  ASSERT_TRUE(pool.submit("pH01", [&] {
    started.open();
    release.wait();
    // Widens the window in which a stop() that does not join would return before this job ends.
    std::this_thread::sleep_for(50ms);
    running_finished = true;
  }));
  ASSERT_TRUE(started.wait());
  ASSERT_TRUE(pool.submit("pH01", [&] { ++queued_ran; }));
  ASSERT_TRUE(pool.submit("pH02", [&] { ++queued_ran; }));
  ASSERT_EQ(pool.waiting(), 2u);

  // Once stop() has given up on the queue (waiting() drops to 0 only then: the one worker is
  // held by the running job), the running job may go on.
  std::thread releaser([&] {
    if (eventually([&] { return pool.waiting() == 0; })) release.open();
  });
  const std::size_t abandoned = pool.stop(Clock::now());  // the deadline has come
  releaser.join();
  EXPECT_EQ(abandoned, 2u);
  EXPECT_TRUE(running_finished) << "stop() returned before the running job ended";
  EXPECT_EQ(queued_ran.load(), 0) << "an abandoned job ran";
  EXPECT_EQ(pool.served(), 1u);
}

}  // namespace
}  // namespace pa
