#pragma once
// The broker connection (SPEC sections 3 and 3.6) over libmosquitto: a persistent session (clean
// session off, stable client id), QoS 1, TLS, credentials, a will plus the retained online status;
// fail-over along a list of brokers, reconnection with back-off and jitter capped at 10 attempts
// a minute (ReconnectPolicy), client id conflicts (ConflictWatch), lost sessions announced, and
// the MQTT 5 extras (session expiry, Receive Maximum, user properties, reason codes by name). The
// event loop runs on the thread that calls run(); callbacks run there too and must only decode
// and enqueue.
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
#include "mqtt/broker_list.hpp"
#include "mqtt/client.hpp"
#include "mqtt/reconnect_policy.hpp"
#include "protocol/protocol.hpp"

namespace pa::mqtt {

// Where a reply goes besides P/D/response: the MQTT 5 Response Topic and Correlation Data.
struct ReplyTo {
  std::string topic;
  std::string correlation_data;
};

// MQTT 5 user properties of a publish (name, value): a response echoes the request's request_id
// and W3C traceparent this way (SPEC 3.6). Ignored with MQTT 3.1.1, which has none.
using UserProperties = std::vector<std::pair<std::string, std::string>>;

// What the retained online status says about the connection (SPEC 3.6), handed to the status
// builder whenever the status is published: after each subscription, and when a conflict starts
// or ends.
struct SessionFacts {
  std::string broker;              // "host:port" in use
  bool resumed = false;            // the CONNACK said the broker kept our session
  std::int64_t session_since = 0;  // Unix seconds: when that session began, as far as we know
  std::string instance;            // random per process: tells two agents on one client id apart
  bool client_id_conflict = false;
};
using StatusBuilder = std::function<std::string(const SessionFacts&)>;

// What the operator must hear about a client id conflict, in the log, STATUS= and `check`.
inline constexpr const char* kConflictFix =
    "another Pi probably uses the same client id, e.g. an SD card cloned from this one: on the "
    "clone run `sudo rm /etc/machine-id && sudo systemd-machine-id-setup` and restart its agent, "
    "or give each agent its own MQTT_CLIENT_ID";

// The state folder's record of when the broker session began ("<client id> <Unix seconds>\n"),
// so that a restart can tell a resumed session from a lost one. Reading gives the seconds only
// for a well-formed record of `client_id` with a positive time: anything else (another client id,
// a torn or edited file) means no session is known, and the first CONNACK decides.
std::string encode_session_record(std::string_view client_id, std::int64_t since);
std::optional<std::int64_t> read_session_record(std::string_view record,
                                                std::string_view client_id);

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

  // Sets up the client, TLS and will for `brokers` (tried in order; all with TLS or all without,
  // since one libmosquitto client cannot switch TLS off). `online_status` builds the retained
  // status message. Throws ConfigError for settings libmosquitto refuses.
  Session(const Config& config, std::vector<BrokerAddress> brokers, std::string status_topic,
          StatusBuilder online_status, Handlers handlers);
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  ~Session();

  // Runs the event loop until `stop` becomes true; never fails on broker trouble.
  void run(const std::atomic<bool>& stop);

  // Thread-safe. QoS 1 messages are kept by libmosquitto across reconnects. Returns the message
  // id (whose acknowledgement on_published reports), or nullopt when the client refused it.
  std::optional<int> publish(const std::string& topic, const std::string& payload, bool retain,
                             const ReplyTo* reply = nullptr,
                             const UserProperties* user_properties = nullptr);

  // Publishes the offline status and disconnects, flushing for at most `timeout`.
  void close(std::chrono::milliseconds timeout);

  bool connected() const noexcept { return connected_; }
  // Event loop thread: the broker state (connected, unreachable, refused...), and a problem only
  // the operator can fix (a client id conflict, an MQTT version the broker refuses), empty when
  // there is none: STATUS= leads with it.
  std::string state_text() const;
  std::string problem_text() const;
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

  const BrokerAddress& broker() const { return brokers_[current_]; }
  std::string broker_name() const { return to_string(broker()); }
  void start_connect();
  void finish_connect();
  // Before a CONNACK: the next broker of the list, after the back-off.
  void attempt_failed(const std::string& cause);
  // After a CONNACK: the same broker again, after the back-off (or the spread, or the conflict
  // delay).
  void connection_ended(const std::string& cause, bool closed_by_broker);
  void schedule(Clock::time_point at, const std::string& reason);
  void note_state(const std::string& state);
  void session_started(bool present);
  void status_message_seen(const mosquitto_message& message);
  void conflict_changed(ConflictWatch::Change change);
  void publish_status(int* mid);
  SessionFacts facts() const;

  const Config& config_;
  std::vector<BrokerAddress> brokers_;
  std::size_t current_ = 0;
  std::string status_topic_;
  StatusBuilder online_status_;
  Handlers handlers_;
  Client client_;
  const bool v5_;
  std::atomic<bool> connected_{false};  // CONNACK accepted
  bool socket_open_ = false;
  bool subscribed_ = false;  // SUBACK of the request topics
  bool stable_ = false;      // connected for ReconnectLimits::stable_after
  bool closing_ = false;     // close() disconnects: not the broker's doing
  // Name look-up and TCP connect run on this thread so that the event loop keeps turning (READY,
  // STATUS=, WATCHDOG=1) while the broker's name does not resolve or its SYNs are dropped.
  std::thread connector_;
  std::atomic<bool> connect_returned_{false};
  int connect_rc_ = 0;
  int connect_errno_ = 0;
  // MQTT 5 only: a broker that closed the connection at our CONNECT is asked once in 3.1.1, on
  // the connector thread, whether it speaks that instead (RabbitMQ before 3.13 does).
  bool suspect_mqtt311_only_ = false;
  bool protocol_probe_ran_ = false;
  bool protocol_probe_accepted_ = false;
  std::string protocol_problem_;
  Clock::time_point socket_opened_{};
  Clock::time_point connack_at_{};
  Clock::duration connect_timeout_;  // for the CONNACK and the SUBACK (SPEC section 8)
  ReconnectPolicy policy_;
  ConflictWatch conflict_;
  Clock::time_point next_attempt_{};
  int subscribe_mid_ = -1;     // the SUBSCRIBE whose SUBACK makes us ready
  int status_sub_mid_ = -1;    // our own status topic, watched for another instance (SPEC 3.6)
  bool watch_status_ = true;   // false once the broker refused that subscription
  int online_mid_ = -1;        // the online status in flight after subscribing
  std::string library_error_;  // libmosquitto's first error since the last attempt (OpenSSL's)
  std::string last_state_;
  const std::string instance_;
  bool had_session_ = false;  // a CONNACK was accepted before, in this run or a recorded one
  bool resumed_ = false;
  std::int64_t session_since_ = 0;
  // 32 bits: lock-free on 32-bit ARM without libatomic, and a counter that will not wrap.
  std::atomic<std::uint32_t> connections_{0};
  std::atomic<std::uint32_t> sessions_lost_{0};
};

}  // namespace pa::mqtt
