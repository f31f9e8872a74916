#pragma once
// The broker connection (SPEC section 3) over libmosquitto: a persistent session (clean session
// off, stable client id), QoS 1, TLS, credentials, a will plus the retained online status, and
// reconnection with exponential back-off and jitter (1 s doubling to 60 s). The event loop runs
// on the thread that calls run(); callbacks run there too and must only decode and enqueue.
#include <mosquitto.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "mqtt/client.hpp"
#include "protocol/protocol.hpp"

namespace pa::mqtt {

// Where a reply goes besides P/D/response: the MQTT 5 Response Topic and Correlation Data.
struct ReplyTo {
  std::string topic;
  std::string correlation_data;
};

class Session {
 public:
  struct Handlers {
    // Network thread: spool + enqueue only. A payload over `max_payload` bytes is not copied
    // (message.payload stays empty, message.payload_bytes says how big it was).
    std::function<void(InboundMessage&&)> on_request;
    std::function<void(int mid)> on_published;  // network thread: the broker acknowledged `mid`
    std::function<void()> on_subscribed;        // subscriptions and the online status acknowledged
    std::function<void()> on_tick;              // each loop turn (watchdog, status)
  };

  // Sets up the client, TLS and will. Throws ConfigError for settings libmosquitto refuses.
  Session(const Config& config, std::string status_topic, std::string online_payload,
          Handlers handlers);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  // Runs the event loop until `stop` becomes true; never fails on broker trouble.
  void run(const std::atomic<bool>& stop);

  // Thread-safe. QoS 1 messages are kept by libmosquitto across reconnects. Returns the message
  // id (whose acknowledgement on_published reports), or nullopt when the client refused it.
  std::optional<int> publish(const std::string& topic, const std::string& payload, bool retain,
                             const ReplyTo* reply = nullptr);

  // Publishes the offline status and disconnects, flushing for at most `timeout`.
  void close(std::chrono::milliseconds timeout);

  bool connected() const noexcept { return connected_; }
  std::string state_text() const;

  // For the metrics (SPEC section 8): connections the broker accepted, and those after the first
  // whose CONNACK said it held no session for us (SPEC 3.6: requests it had queued are lost).
  struct Counters {
    std::uint64_t connections = 0;
    std::uint64_t sessions_lost = 0;
  };
  Counters counters() const noexcept { return {connections_, sessions_lost_}; }

 private:
  static void on_connect(mosquitto*, void* self, int rc, int flags, const mosquitto_property*);
  static void on_disconnect(mosquitto*, void* self, int rc, const mosquitto_property*);
  static void on_subscribe(mosquitto*, void* self, int mid, int count, const int* granted,
                           const mosquitto_property*);
  static void on_message(mosquitto*, void* self, const mosquitto_message* message,
                         const mosquitto_property* props);
  static void on_publish(mosquitto*, void* self, int mid, int reason, const mosquitto_property*);
  static void on_log(mosquitto*, void* self, int level, const char* text);

  void start_connect();
  void finish_connect();
  void schedule_retry(const std::string& cause);
  void note_state(const std::string& state);

  const Config& config_;
  std::string status_topic_;
  std::string online_payload_;
  Handlers handlers_;
  Client client_;
  std::atomic<bool> connected_{false};
  // 32 bits: lock-free on 32-bit ARM without libatomic, and a counter that will not wrap.
  std::atomic<std::uint32_t> connections_{0};
  std::atomic<std::uint32_t> sessions_lost_{0};
  bool socket_open_ = false;
  // Name look-up and TCP connect run on this thread so that the event loop keeps turning (READY,
  // STATUS=, WATCHDOG=1) while the broker's name does not resolve or its SYNs are dropped.
  std::thread connector_;
  std::atomic<bool> connect_returned_{false};
  int connect_rc_ = 0;
  int connect_errno_ = 0;
  std::chrono::steady_clock::time_point socket_opened_{};
  std::chrono::steady_clock::duration connect_timeout_;  // for the CONNACK (SPEC section 8)
  int attempts_ = 0;
  std::chrono::steady_clock::time_point next_attempt_{};
  int subscribe_mid_ = -1;     // the SUBSCRIBE whose SUBACK makes us ready
  int online_mid_ = -1;        // the online status in flight after subscribing
  std::string library_error_;  // libmosquitto's first error since the last attempt (OpenSSL's)
  std::string last_state_;
  std::mt19937 jitter_{std::random_device{}()};
};

}  // namespace pa::mqtt
