#pragma once
// Talks to systemd through sd_notify (SPEC section 8): READY=1 once the broker acknowledged the
// subscriptions, or after 30 s of failing to reach it with a STATUS= saying it is still trying
// (a Pi often boots before its network is up, and the unit must neither fail nor hide that);
// STATUS= lines when the broker state, the count of served requests or the last error change;
// WATCHDOG=1 from the event loop, so a wedged loop stops pinging and systemd restarts the
// service; STOPPING=1 when a shutdown starts. Without NOTIFY_SOCKET every call does nothing.
//
// Every member is called on the event loop thread (Session's on_subscribed and on_tick handlers
// and Agent::run), so nothing here locks.
#include <chrono>
#include <cstddef>
#include <string>

namespace pa {

// What STATUS= reports.
struct ServiceState {
  bool connected = false;  // the broker session is up
  std::string broker;      // Session::state_text(): connected, unreachable, refused...
  std::size_t served = 0;  // requests answered so far
  std::string last_error;  // the most recent error worth an operator's eye, or empty
  // What only the operator can fix about the broker (Session::problem_text(): a client id
  // conflict, an MQTT version it refuses), or empty; STATUS= leads with it (SPEC 3.6).
  std::string problem = {};
};

class ServiceNotifier {
 public:
  // Reads NOTIFY_SOCKET, the watchdog interval (WATCHDOG_USEC, via sd_watchdog_enabled) and the
  // undocumented PA_READY_FALLBACK_SECONDS that lets tests shorten the 30 s fallback.
  ServiceNotifier();

  // Whether systemd listens; callers may skip gathering a ServiceState when it does not.
  bool active() const noexcept { return active_; }

  // The broker acknowledged every subscription: READY=1 the first time.
  void subscribed(const ServiceState& state);
  // Each loop turn (about every 100 ms): the watchdog ping, the READY fallback, STATUS= changes.
  void tick(const ServiceState& state);
  // SIGTERM/SIGINT started the shutdown: STOPPING=1 with a STATUS= saying what is left.
  void stopping(std::size_t queued);

 private:
  void send(const std::string& message);
  void update_status(const ServiceState& state, bool force);

  using Clock = std::chrono::steady_clock;
  bool active_ = false;
  bool ready_ = false;
  bool stopping_ = false;
  Clock::time_point started_;
  Clock::duration ready_fallback_;
  Clock::duration watchdog_interval_{};  // zero: no watchdog
  Clock::time_point last_ping_{};
  Clock::time_point last_status_{};
  std::string status_;      // the last STATUS= sent
  std::string broker_;      // the broker state in it
  std::string last_error_;  // the last error in it
  std::string problem_;     // the problem in it
};

}  // namespace pa
