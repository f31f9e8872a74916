#include "dispatch/ack_tracker.hpp"

namespace pa {
namespace {

// Message ids are 16 bits and reused; an early acknowledgement older than this cannot belong to
// a publish that is still being registered.
constexpr auto kEarlyLifetime = std::chrono::seconds(30);

}  // namespace

void AckTracker::expect(std::uint64_t request, const std::vector<int>& message_ids) {
  bool done = false;
  {
    std::lock_guard lock(mutex_);
    std::size_t open = 0;
    for (int id : message_ids) {
      if (early_.erase(id) > 0) continue;
      expected_[id] = request;
      ++open;
    }
    if (open == 0)
      done = true;
    else
      open_[request] += open;
  }
  if (done) answered_(request);
}

void AckTracker::acknowledged(int message_id) {
  std::uint64_t finished = 0;
  {
    std::lock_guard lock(mutex_);
    const auto now = Clock::now();
    forget_old_early(now);
    const auto it = expected_.find(message_id);
    if (it == expected_.end()) {
      // Either not ours to track (the status message) or not registered yet.
      if (early_.emplace(message_id, now).second) early_order_.emplace_back(now, message_id);
      return;
    }
    const std::uint64_t request = it->second;
    expected_.erase(it);
    const auto open = open_.find(request);
    if (open != open_.end() && --open->second == 0) {
      open_.erase(open);
      finished = request;
    }
  }
  if (finished != 0) answered_(finished);
}

void AckTracker::forget_old_early(Clock::time_point now) {
  while (!early_order_.empty() && now - early_order_.front().first > kEarlyLifetime) {
    const auto it = early_.find(early_order_.front().second);
    if (it != early_.end() && it->second == early_order_.front().first) early_.erase(it);
    early_order_.pop_front();
  }
}

std::size_t AckTracker::waiting() const {
  std::lock_guard lock(mutex_);
  return open_.size();
}

}  // namespace pa
