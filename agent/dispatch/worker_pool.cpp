#include "dispatch/worker_pool.hpp"

namespace pa {

WorkerPool::WorkerPool(std::size_t workers, std::size_t max_waiting) : max_waiting_(max_waiting) {
  if (workers == 0) workers = 1;
  threads_.reserve(workers);
  try {
    for (std::size_t i = 0; i < workers; ++i) threads_.emplace_back([this] { work(); });
  } catch (...) {
    // No thread for the rest (EAGAIN, out of memory): join those started, or their joinable
    // std::thread objects would terminate the process instead of letting it exit with status 1.
    stop(std::chrono::steady_clock::now());
    throw;
  }
}

WorkerPool::~WorkerPool() {
  stop(std::chrono::steady_clock::now());
}

bool WorkerPool::submit(const std::string& device, Job job, bool admitted) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (!accepting_ || (!admitted && waiting_ >= max_waiting_)) return false;
  auto& queue = queues_[device];
  queue.push_back(std::move(job));
  ++waiting_;
  // A device is "ready" only when it has waiting jobs and none running: this is what keeps
  // one device's requests in order while others run in parallel.
  if (queue.size() == 1 && !running_.count(device)) {
    ready_.push_back(device);
    ready_cv_.notify_one();
  }
  return true;
}

void WorkerPool::work() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    ready_cv_.wait(lock, [this] { return quit_ || !ready_.empty(); });
    if (quit_) return;
    std::string device = std::move(ready_.front());
    ready_.pop_front();
    auto it = queues_.find(device);
    Job job = std::move(it->second.front());
    it->second.pop_front();
    if (it->second.empty()) queues_.erase(it);
    --waiting_;
    running_[device] = true;
    ++busy_workers_;
    lock.unlock();
    job();  // jobs report their own errors; they never throw (see Agent::handle)
    job = nullptr;
    lock.lock();
    --busy_workers_;
    ++served_;
    running_.erase(device);
    if (queues_.count(device)) {
      ready_.push_back(device);
      ready_cv_.notify_one();
    }
    idle_cv_.notify_all();
  }
}

std::size_t WorkerPool::stop(std::chrono::steady_clock::time_point deadline) {
  std::size_t abandoned = 0;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    accepting_ = false;
    idle_cv_.wait_until(lock, deadline, [this] { return waiting_ == 0 && busy_workers_ == 0; });
    abandoned = waiting_;
    quit_ = true;
    ready_.clear();
    queues_.clear();
    waiting_ = 0;
  }
  ready_cv_.notify_all();
  // A job still running past the deadline is awaited: abandoning it mid-write could leave
  // a half-written key, and key writes are bounded (SPEC section 8's 10 s is for the queue).
  for (auto& thread : threads_)
    if (thread.joinable()) thread.join();
  threads_.clear();
  return abandoned;
}

bool WorkerPool::has_room() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return waiting_ < max_waiting_;
}

std::size_t WorkerPool::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return waiting_;
}

std::size_t WorkerPool::served() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return served_;
}

}  // namespace pa
