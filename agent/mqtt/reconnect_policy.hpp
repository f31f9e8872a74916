#pragma once
// When the session tries a broker again (SPEC sections 3 and 3.6), and when it concludes that
// another client is using its client id. Pure logic: every call is given the time, so the unit
// tests run through hours of reconnects in microseconds.
#include <chrono>
#include <cstdint>
#include <deque>
#include <random>
#include <string>

namespace pa::mqtt {

using Clock = std::chrono::steady_clock;

struct ReconnectLimits {
  // Back-off: 1 s doubling to 60 s, each delay drawn from [half, full] so that a fleet that lost
  // the same broker does not come back in lock step.
  Clock::duration first_delay = std::chrono::seconds(1);
  Clock::duration max_delay = std::chrono::seconds(60);
  // Only a connection that lasted this long starts the back-off over: a broker that accepts and
  // then drops the connection (at SUBSCRIBE, say) must not be hammered (SPEC 3.6).
  Clock::duration stable_after = std::chrono::seconds(30);
  // After losing a stable connection the first attempt waits a random first_delay..spread, and
  // the back-off goes on from there (16-32 s, then 30-60 s): a broker restart drops the whole
  // fleet at once, and at most a tenth of it should come back in any one second (SPEC section
  // 10's fleet figure).
  Clock::duration spread = std::chrono::seconds(30);
  // SPEC 3.6: never more than 10 connection attempts a minute, whatever happens.
  int attempts_per_window = 10;
  Clock::duration window = std::chrono::seconds(60);
};

class ReconnectPolicy {
 public:
  explicit ReconnectPolicy(ReconnectLimits limits = {},
                           std::uint64_t seed = std::random_device{}());

  // An attempt (TCP connect, TLS, CONNECT) starts at `now`.
  void attempt_started(Clock::time_point now);
  // The attempt failed, or its connection ended before it was stable: the next one follows the
  // back-off. Returns when the next attempt may start.
  Clock::time_point after_failure(Clock::time_point now);
  // The connection lasted stable_after: the back-off starts over.
  void connection_stable();
  // A stable connection was lost: the first attempt is spread, and so are those after it (see
  // ReconnectLimits::spread).
  Clock::time_point after_loss(Clock::time_point now);
  // Another client holds our client id (ConflictWatch): the longest delay, up to twice over.
  Clock::time_point after_conflict(Clock::time_point now);

  // Attempts started in the window that ends at `now`.
  int attempts_in_window(Clock::time_point now) const;
  const ReconnectLimits& limits() const noexcept { return limits_; }

 private:
  Clock::time_point draw(Clock::time_point now, Clock::duration low, Clock::duration high);

  ReconnectLimits limits_;
  int failures_ = 0;                      // since the last stable connection
  std::deque<Clock::time_point> recent_;  // the last attempts_per_window attempt starts
  std::mt19937_64 random_;
};

// SPEC 3.6: another client keeps taking our session away (Pis cloned from one SD card share
// /etc/machine-id and so the default client id). Evidence, at most once per connection: the
// broker's DISCONNECT with reason 0x8E (session taken over, MQTT 5); the broker closing the
// connection within `window` of its CONNACK once we were subscribed (MQTT 3.1.1 says no more); or
// another instance of an agent announcing itself online on our own status topic. Evidence on
// `in_a_row` connections in a row is a conflict, which lasts until a connection stays
// `clear_after` without new evidence.
class ConflictWatch {
 public:
  struct Limits {
    int in_a_row = 3;
    Clock::duration window = std::chrono::seconds(10);
    Clock::duration clear_after = std::chrono::minutes(3);
  };
  enum class Change { none, entered, cleared };

  ConflictWatch() = default;
  explicit ConflictWatch(Limits limits) : limits_(limits) {}

  // The broker accepted a connection (CONNACK) at `now`.
  void connection_started(Clock::time_point now);
  // Evidence on the current connection; `why` says what was seen, for the log.
  Change evidence(Clock::time_point now, std::string why);
  // The connection ended. `closed_by_broker`: neither we nor our keep-alive ended it;
  // `subscribed`: the broker had acknowledged our subscriptions (a broker that closes at
  // SUBSCRIBE refuses the subscription; it does not hand the session to someone else).
  Change connection_ended(Clock::time_point now, bool closed_by_broker, bool subscribed);
  // Each loop turn while connected: clears a conflict once no evidence came for clear_after.
  Change tick(Clock::time_point now);

  bool in_conflict() const noexcept { return in_conflict_; }
  int streak() const noexcept { return streak_; }
  const std::string& last_evidence() const noexcept { return last_evidence_; }

 private:
  Change count(Clock::time_point now, std::string why);

  Limits limits_;
  bool connected_ = false;
  Clock::time_point connected_at_{};
  bool counted_ = false;  // this connection already gave its evidence
  Clock::time_point last_evidence_at_{};
  int streak_ = 0;
  bool in_conflict_ = false;
  std::string last_evidence_;
};

}  // namespace pa::mqtt
