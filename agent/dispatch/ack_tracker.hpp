#pragma once
// Which requests are answered (SPEC section 3.4): a request counts as answered once the broker
// acknowledged every message that answers it (its response, its key, its Response Topic copy),
// not when libmosquitto queued them, so a crash while the broker is away loses no answer.
//
// Publishes happen on worker threads and acknowledgements arrive on the network thread, so an
// acknowledgement can come before the worker has registered the message id: such early ones are
// kept for a while and matched when the registration arrives.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace pa {

class AckTracker {
 public:
  using Answered = std::function<void(std::uint64_t request)>;

  // `answered` runs (on whichever thread completes a request) once all its messages are
  // acknowledged, or at once for a request that published nothing.
  explicit AckTracker(Answered answered) : answered_(std::move(answered)) {}

  // Worker thread: `request` published `message_ids`.
  void expect(std::uint64_t request, const std::vector<int>& message_ids);
  // Network thread: the broker acknowledged `message_id`.
  void acknowledged(int message_id);

  std::size_t waiting() const;

 private:
  using Clock = std::chrono::steady_clock;
  void forget_old_early(Clock::time_point now);

  Answered answered_;
  mutable std::mutex mutex_;
  std::unordered_map<int, std::uint64_t> expected_;      // message id -> request
  std::unordered_map<std::uint64_t, std::size_t> open_;  // request -> messages not yet acked
  std::unordered_map<int, Clock::time_point> early_;     // acked before they were expected
  std::deque<std::pair<Clock::time_point, int>> early_order_;
};

}  // namespace pa
