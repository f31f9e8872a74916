#pragma once
// Worker pool that runs jobs one at a time per device, in arrival order, with different devices
// in parallel (SPEC section 5), and a bound on waiting jobs (beyond it: "busy", SPEC section 2).
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace pa {

class WorkerPool {
 public:
  using Job = std::function<void()>;

  WorkerPool(std::size_t workers, std::size_t max_waiting);
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues a job behind the device's earlier jobs. false when max_waiting jobs already wait
  // (unless `admitted`: the caller has bounded it already, e.g. a request recovered from the
  // intake spool) or the pool is stopping; the job is then not run.
  bool submit(const std::string& device, Job job, bool admitted = false);

  // Whether a job submitted now would find fewer than max_waiting jobs waiting. Only the caller's
  // own submits add jobs, so a true stays true until it submits.
  bool has_room() const;

  // Stops taking jobs, lets workers finish what is queued until `deadline`, then abandons the
  // rest and joins. Returns the number of abandoned jobs.
  std::size_t stop(std::chrono::steady_clock::time_point deadline);

  std::size_t waiting() const;
  std::size_t served() const;

 private:
  void work();

  mutable std::mutex mutex_;
  std::condition_variable ready_cv_;
  std::condition_variable idle_cv_;
  std::unordered_map<std::string, std::deque<Job>> queues_;  // devices with waiting jobs
  std::deque<std::string> ready_;  // devices with waiting jobs and none running
  std::unordered_map<std::string, bool> running_;
  std::size_t waiting_ = 0;
  std::size_t busy_workers_ = 0;
  std::size_t served_ = 0;
  std::size_t max_waiting_;
  bool accepting_ = true;
  bool quit_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace pa
