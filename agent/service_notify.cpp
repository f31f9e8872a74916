#include "service_notify.hpp"

#include <fmt/format.h>
#include <systemd/sd-daemon.h>

#include <cstdint>
#include <cstdlib>

#include "config/config.hpp"

namespace pa {
namespace {

// SPEC section 8: READY=1 after this long without reaching the broker.
constexpr std::chrono::seconds kReadyFallback{30};
// Between STATUS= lines that only update the count of served requests, so a burst of requests
// does not become a burst of datagrams.
constexpr std::chrono::seconds kCountStatusInterval{1};

std::string status_text(const ServiceState& state) {
  const std::string broker = state.broker.empty() ? "connecting to the broker" : state.broker;
  std::string text = state.connected ? broker : "still trying to reach the broker: " + broker;
  text += fmt::format("; {} request(s) served", state.served);
  if (!state.last_error.empty()) text += "; last error: " + state.last_error;
  if (!state.problem.empty()) text = state.problem + "; " + text;
  return text;
}

}  // namespace

ServiceNotifier::ServiceNotifier()
    : started_(Clock::now()),
      ready_fallback_(test_override_seconds("PA_READY_FALLBACK_SECONDS", kReadyFallback)) {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  active_ = socket != nullptr && socket[0] != '\0';
  if (!active_) return;
  std::uint64_t usec = 0;
  // WATCHDOG_USEC (and WATCHDOG_PID when set) from systemd's WatchdogSec=.
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0)
    watchdog_interval_ = std::chrono::microseconds(usec / 2);  // ping at half the interval
}

void ServiceNotifier::send(const std::string& message) {
  // A lost datagram is not worth failing over: systemd will say so if it misses READY or pings.
  sd_notify(0, message.c_str());
}

void ServiceNotifier::subscribed(const ServiceState& state) {
  if (!active_ || stopping_) return;
  if (!ready_) {
    ready_ = true;
    status_ = status_text(state);
    broker_ = state.broker;
    last_error_ = state.last_error;
    problem_ = state.problem;
    last_status_ = Clock::now();
    send("READY=1\nSTATUS=" + status_);
    return;
  }
  update_status(state, true);
}

void ServiceNotifier::tick(const ServiceState& state) {
  if (!active_) return;
  const auto now = Clock::now();
  if (watchdog_interval_ != Clock::duration::zero() && now - last_ping_ >= watchdog_interval_) {
    last_ping_ = now;
    send("WATCHDOG=1");
  }
  if (stopping_) return;
  if (!ready_ && now - started_ >= ready_fallback_) {
    // Ready without the broker: the unit starts, and STATUS= tells why it is not subscribed.
    ready_ = true;
    status_ = status_text(state);
    broker_ = state.broker;
    last_error_ = state.last_error;
    problem_ = state.problem;
    last_status_ = now;
    send("READY=1\nSTATUS=" + status_);
    return;
  }
  update_status(state, false);
}

void ServiceNotifier::update_status(const ServiceState& state, bool force) {
  const auto now = Clock::now();
  const bool changed =
      state.broker != broker_ || state.last_error != last_error_ || state.problem != problem_;
  if (!force && !changed && now - last_status_ < kCountStatusInterval) return;
  std::string text = status_text(state);
  if (text == status_) return;
  status_ = std::move(text);
  broker_ = state.broker;
  last_error_ = state.last_error;
  problem_ = state.problem;
  last_status_ = now;
  send("STATUS=" + status_);
}

void ServiceNotifier::stopping(std::size_t queued) {
  if (!active_ || stopping_) return;
  stopping_ = true;
  send(fmt::format("STOPPING=1\nSTATUS=stopping: finishing {} queued request(s)", queued));
}

}  // namespace pa
