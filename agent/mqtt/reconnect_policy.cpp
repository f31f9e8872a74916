#include "mqtt/reconnect_policy.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

namespace pa::mqtt {

ReconnectPolicy::ReconnectPolicy(ReconnectLimits limits, std::uint64_t seed)
    : limits_(limits), random_(seed) {}

void ReconnectPolicy::attempt_started(Clock::time_point now) {
  recent_.push_back(now);
  while (recent_.size() > static_cast<std::size_t>(std::max(limits_.attempts_per_window, 1)))
    recent_.pop_front();
}

int ReconnectPolicy::attempts_in_window(Clock::time_point now) const {
  return static_cast<int>(std::count_if(recent_.begin(), recent_.end(), [&](Clock::time_point at) {
    return at > now - limits_.window && at <= now;
  }));
}

Clock::time_point ReconnectPolicy::draw(Clock::time_point now, Clock::duration low,
                                        Clock::duration high) {
  std::uniform_int_distribution<Clock::rep> spread(low.count(), std::max(low, high).count());
  Clock::time_point at = now + Clock::duration(spread(random_));
  // The window's cap: the attempt attempts_per_window before this one must have left it.
  if (limits_.attempts_per_window > 0 &&
      recent_.size() >= static_cast<std::size_t>(limits_.attempts_per_window))
    at = std::max(at,
                  recent_[recent_.size() - static_cast<std::size_t>(limits_.attempts_per_window)] +
                      limits_.window);
  return at;
}

Clock::time_point ReconnectPolicy::after_failure(Clock::time_point now) {
  Clock::duration base = limits_.first_delay;
  for (int i = 0; i < failures_ && base < limits_.max_delay; ++i) base *= 2;
  base = std::min(base, limits_.max_delay);
  ++failures_;
  return draw(now, base / 2, base);
}

void ReconnectPolicy::connection_stable() {
  failures_ = 0;
}

Clock::time_point ReconnectPolicy::after_loss(Clock::time_point now) {
  // Should the broker still be away, the back-off goes on from the spread's scale: agents whose
  // first attempt fell into the outage would otherwise all come back in its first seconds.
  failures_ = 0;
  for (Clock::duration base = limits_.first_delay; base < limits_.spread; base *= 2) ++failures_;
  return draw(now, limits_.first_delay, limits_.spread);
}

Clock::time_point ReconnectPolicy::after_conflict(Clock::time_point now) {
  failures_ = 64;  // the back-off stays at its longest until a connection is stable again
  return draw(now, limits_.max_delay, 2 * limits_.max_delay);
}

void ConflictWatch::connection_started(Clock::time_point now) {
  connected_ = true;
  connected_at_ = now;
  counted_ = false;
}

ConflictWatch::Change ConflictWatch::count(Clock::time_point now, std::string why) {
  last_evidence_at_ = now;
  last_evidence_ = std::move(why);
  if (counted_) return Change::none;
  counted_ = true;
  ++streak_;
  if (!in_conflict_ && streak_ >= limits_.in_a_row) {
    in_conflict_ = true;
    return Change::entered;
  }
  return Change::none;
}

ConflictWatch::Change ConflictWatch::evidence(Clock::time_point now, std::string why) {
  return count(now, std::move(why));
}

ConflictWatch::Change ConflictWatch::connection_ended(Clock::time_point now, bool closed_by_broker,
                                                      bool subscribed) {
  if (!connected_) return Change::none;
  connected_ = false;
  const Clock::duration lasted = now - connected_at_;
  if (!counted_ && closed_by_broker && subscribed && lasted < limits_.window)
    return count(now, fmt::format("the broker closed the connection {:.1f} s after accepting it",
                                  std::chrono::duration<double>(lasted).count()));
  if (!counted_ && !in_conflict_) streak_ = 0;  // a connection without evidence breaks the row
  return Change::none;
}

ConflictWatch::Change ConflictWatch::tick(Clock::time_point now) {
  if (!connected_) return Change::none;
  const Clock::time_point quiet_since =
      counted_ ? std::max(connected_at_, last_evidence_at_) : connected_at_;
  if (now - quiet_since < limits_.clear_after) return Change::none;
  streak_ = 0;
  counted_ = false;
  if (!in_conflict_) return Change::none;
  in_conflict_ = false;
  return Change::cleared;
}

}  // namespace pa::mqtt
