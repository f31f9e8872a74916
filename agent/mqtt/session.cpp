#include "mqtt/session.hpp"

#include <fmt/format.h>
#include <mqtt_protocol.h>
#include <unistd.h>

#include <sys/socket.h>

#include <rapidjson/document.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <random>
#include <system_error>
#include <thread>
#include <utility>

#include "base/log.hpp"
#include "base/text.hpp"
#include "base/time.hpp"
#include "keystore/file_util.hpp"
#include "mqtt/probe.hpp"

namespace pa::mqtt {
namespace {

constexpr int kQos = 1;
// A broker that accepted TCP but has not answered CONNECT by then (or whose SYNs vanish) is
// given up on, and the next attempt follows the back-off. Tests shorten it with the undocumented
// PA_CONNECT_TIMEOUT_SECONDS.
constexpr auto kConnectTimeout = std::chrono::seconds(30);
// How long the session's MQTT 3.1.1 question to a broker that closed at an MQTT 5 CONNECT takes.
constexpr auto kProtocolProbeTimeout = std::chrono::seconds(10);
// Where the start of the broker's session is kept across restarts, in the state folder.
constexpr const char* kSessionRecord = "mqtt_session";

// A broker's MQTT 5 DISCONNECT carries a reason code (0x80 and up for errors) where libmosquitto
// otherwise reports one of its own error numbers (all below 0x80).
std::string describe_disconnect(int rc, bool v5) {
  if (v5 && rc >= 0x80) return fmt::format("{} (reason 0x{:02X})", mosquitto_reason_string(rc), rc);
  return describe_rc(rc);
}

std::string seconds_text(Clock::duration delay) {
  return fmt::format("{:.1f} s", std::chrono::duration<double>(delay).count());
}

std::string random_instance() {
  std::random_device device;
  return fmt::format("{:08x}{:08x}", device(), device());
}

// W3C Trace Context: version-traceid-parentid-flags in lower-case hex, neither id all zeros.
bool is_traceparent(std::string_view text) {
  if (text.size() != 55 || text[2] != '-' || text[35] != '-' || text[52] != '-') return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (i == 2 || i == 35 || i == 52) continue;
    const char c = text[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  auto all_zero = [](std::string_view id) {
    return id.find_first_not_of('0') == std::string::npos;
  };
  return text.substr(0, 2) != "ff" && !all_zero(text.substr(3, 32)) &&
         !all_zero(text.substr(36, 16));
}

std::int64_t unix_now() {
  return static_cast<std::int64_t>(std::time(nullptr));
}

}  // namespace

std::string encode_session_record(std::string_view client_id, std::int64_t since) {
  return fmt::format("{} {}\n", client_id, since);
}

std::optional<std::int64_t> read_session_record(std::string_view record,
                                                std::string_view client_id) {
  if (record.size() <= client_id.size() + 2 || record.substr(0, client_id.size()) != client_id ||
      record[client_id.size()] != ' ' || record.back() != '\n')
    return std::nullopt;
  const std::string_view digits =
      record.substr(client_id.size() + 1, record.size() - client_id.size() - 2);
  std::int64_t since = 0;
  const auto [end, error] = std::from_chars(digits.data(), digits.data() + digits.size(), since);
  if (error != std::errc() || end != digits.data() + digits.size() || since <= 0)
    return std::nullopt;
  return since;
}

Session::Session(const Config& config, std::vector<BrokerAddress> brokers, std::string status_topic,
                 StatusBuilder online_status, Handlers handlers)
    : config_(config),
      brokers_(std::move(brokers)),
      status_topic_(std::move(status_topic)),
      online_status_(std::move(online_status)),
      handlers_(std::move(handlers)),
      // clean_session=false: the broker keeps our subscriptions and queues QoS 1 requests while
      // we are away (SPEC section 3).
      client_(config.mqtt_client_id, false, this),
      v5_(config.mqtt_protocol == MqttProtocol::v5),
      connect_timeout_(test_override_seconds("PA_CONNECT_TIMEOUT_SECONDS", kConnectTimeout)),
      policy_([] {
        // Undocumented, for tests only: a test cannot wait out the 30 s spread after a broker
        // restart, or the 30 s that make a connection stable.
        ReconnectLimits limits;
        limits.spread =
            test_override_seconds("PA_RECONNECT_SPREAD_SECONDS", std::chrono::seconds(30));
        limits.stable_after =
            test_override_seconds("PA_STABLE_CONNECTION_SECONDS", std::chrono::seconds(30));
        return limits;
      }()),
      instance_(random_instance()) {
  if (brokers_.empty()) throw ConfigError("no MQTT broker configured");
  for (const BrokerAddress& broker : brokers_)
    if (broker.tls != brokers_.front().tls)
      throw ConfigError(fmt::format(
          "invalid MQTT_BROKER_URL: {} and {} differ in TLS; list only mqtts:// or only mqtt:// "
          "brokers",
          to_string(brokers_.front()), to_string(broker)));
  mosquitto_threaded_set(client_.get(), true);
  mosquitto_connect_v5_callback_set(client_.get(), &Session::on_connect);
  mosquitto_disconnect_v5_callback_set(client_.get(), &Session::on_disconnect);
  mosquitto_subscribe_v5_callback_set(client_.get(), &Session::on_subscribe);
  mosquitto_message_v5_callback_set(client_.get(), &Session::on_message);
  mosquitto_publish_v5_callback_set(client_.get(), &Session::on_publish);
  mosquitto_log_callback_set(client_.get(), &Session::on_log);

  // Protocol, TCP_NODELAY, credentials and TLS: the same for every broker of the list, which
  // differ only in host and port (given to each connect).
  ConnectionSettings settings = connection_settings(config);
  settings.tls = brokers_.front().tls;
  client_.configure(settings);
  if (brokers_.front().tls && config.mqtt_tls_insecure)
    log_warning("MQTT_TLS_INSECURE is on: the broker's certificate host name is not verified");

  if (v5_) {
    // libmosquitto 2.0 has no asynchronous connect that takes CONNECT properties, but keeps
    // those of the last mosquitto_connect_bind_v5() for every later connect. That call stores
    // them before it checks its arguments, so an invalid port stores them without connecting.
    // Receive Maximum: the broker sends no more unacknowledged requests than the queue may hold
    // (SPEC 3.6; the protocol's limit is 65535).
    mosquitto_property* list = nullptr;
    mosquitto_property_add_int32(&list, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                 static_cast<std::uint32_t>(config.session_expiry));
    mosquitto_property_add_int16(
        &list, MQTT_PROP_RECEIVE_MAXIMUM,
        static_cast<std::uint16_t>(std::clamp(config.queue_max, 1, 65535)));
    const PropertyList props(list);
    const int rc = mosquitto_connect_bind_v5(client_.get(), brokers_.front().host.c_str(), -1,
                                             config.mqtt_keepalive, nullptr, props.get());
    if (rc != MOSQ_ERR_INVAL) throw ConfigError("cannot set the MQTT 5 CONNECT properties");
  }

  const std::string offline = R"({"status":"offline"})";
  if (mosquitto_will_set_v5(client_.get(), status_topic_.c_str(), static_cast<int>(offline.size()),
                            offline.data(), kQos, true, nullptr) != MOSQ_ERR_SUCCESS)
    throw ConfigError("cannot set the MQTT will");

  // The session a previous run had (SPEC 3.6: "session_since" of a resumed session).
  if (!config.state_dir.empty()) {
    try {
      const std::optional<std::int64_t> since = read_session_record(
          keystore::read_file(config.state_dir + "/" + kSessionRecord), config.mqtt_client_id);
      if (since) {
        session_since_ = *since;
        had_session_ = true;
      }
    } catch (const std::exception&) {
      // None yet: the first connect says whether the broker has one.
    }
  }
}

std::string Session::state_text() const {
  return last_state_;
}

std::string Session::problem_text() const {
  if (conflict_.in_conflict())
    return fmt::format("client id conflict: another client keeps taking the session of {}",
                       config_.mqtt_client_id);
  return protocol_problem_;
}

SessionFacts Session::facts() const {
  return SessionFacts{broker_name(), resumed_, session_since_, instance_, conflict_.in_conflict()};
}

void Session::note_state(const std::string& state) {
  // Logged once per change of state, not on every retry (SPEC section 3).
  if (state == last_state_) return;
  last_state_ = state;
  if (connected_)
    log_info("{}", state);
  else
    log_warning("{}", state);
}

Session::~Session() {
  // A look-up still running holds the client; it ends within the resolver's own time-outs.
  if (connector_.joinable()) connector_.join();
}

void Session::start_connect() {
  const Clock::time_point now = Clock::now();
  policy_.attempt_started(now);
  connect_returned_ = false;
  const bool probe = v5_ && suspect_mqtt311_only_;
  suspect_mqtt311_only_ = false;
  protocol_probe_ran_ = probe;
  connector_ = std::thread([this, probe, target = broker()] {
    if (probe)
      protocol_probe_accepted_ =
          accepts_protocol(config_, target, MqttProtocol::v311, kProtocolProbeTimeout);
    // The asynchronous connect resolves the name (blocking, here) and starts a non-blocking TCP
    // connect; the event loop finishes it.
    connect_rc_ = mosquitto_connect_bind_async(client_.get(), target.host.c_str(), target.port,
                                               config_.mqtt_keepalive, nullptr);
    connect_errno_ = errno;
    connect_returned_ = true;
  });
}

void Session::finish_connect() {
  connector_.join();
  if (protocol_probe_ran_) {
    protocol_probe_ran_ = false;
    if (protocol_probe_accepted_ && protocol_problem_.empty()) {
      protocol_problem_ = fmt::format("broker {}: {}", broker_name(), kMqtt5RefusedFix);
      log_error(
          "broker {} closes the connection at an MQTT 5 CONNECT but accepts MQTT 3.1.1: {} "
          "(brokers such as RabbitMQ before 3.13 speak only 3.1.1)",
          broker_name(), kMqtt5RefusedFix);
    }
  }
  if (connect_rc_ != MOSQ_ERR_SUCCESS) {
    errno = connect_errno_;
    attempt_failed(
        fmt::format("broker {} unreachable: {}", broker_name(), describe_rc(connect_rc_)));
    return;
  }
  socket_open_ = true;
  socket_opened_ = Clock::now();
}

void Session::schedule(Clock::time_point at, const std::string& reason) {
  next_attempt_ = at;
  // "A TLS error occurred" alone does not say what to fix; OpenSSL's reason does.
  const std::string cause =
      library_error_.empty() ? reason : fmt::format("{} ({})", reason, library_error_);
  library_error_.clear();
  const std::string next = brokers_.size() > 1 ? fmt::format("; trying {} next", broker_name())
                                               : std::string("; retrying with back-off");
  note_state(cause + next);
  log_debug("next connection attempt to {} in {}", broker_name(), seconds_text(at - Clock::now()));
}

void Session::attempt_failed(const std::string& cause) {
  connected_ = false;
  socket_open_ = false;
  subscribed_ = false;
  stable_ = false;
  // SPEC 3.6: after a broker fails the next one is tried, with the same back-off.
  current_ = (current_ + 1) % brokers_.size();
  schedule(policy_.after_failure(Clock::now()), cause);
}

void Session::connection_ended(const std::string& cause, bool closed_by_broker) {
  const Clock::time_point now = Clock::now();
  const bool was_subscribed = subscribed_;
  const bool was_stable = stable_;
  connected_ = false;
  socket_open_ = false;
  subscribed_ = false;
  stable_ = false;
  conflict_changed(conflict_.connection_ended(now, closed_by_broker, was_subscribed));
  if (conflict_.in_conflict()) {
    schedule(policy_.after_conflict(now),
             fmt::format("{}; client id conflict, backing off ({})", cause, kConflictFix));
    return;
  }
  if (!was_subscribed) {
    // Accepted, then closed before the SUBACK: typically a user that may connect but not
    // subscribe, or (RabbitMQ) a session queue whose node is down. Not a stable connection, so
    // the back-off goes on growing (SPEC 3.6: at most 10 attempts a minute), and the next broker
    // of the list may do better.
    current_ = (current_ + 1) % brokers_.size();
    schedule(
        policy_.after_failure(now),
        fmt::format("{}: the broker closed the connection right after accepting it, before "
                    "acknowledging the subscriptions; may {} subscribe to {}/+/request? "
                    "(see the broker's log)",
                    cause, config_.mqtt_user ? "user " + *config_.mqtt_user : "an anonymous client",
                    config_.provision_topic_base));
    return;
  }
  schedule(was_stable ? policy_.after_loss(now) : policy_.after_failure(now), cause);
}

void Session::conflict_changed(ConflictWatch::Change change) {
  if (change == ConflictWatch::Change::entered) {
    log_error(
        "client id conflict: the broker keeps giving the session of client id {} to another "
        "client ({} connections in a row; last: {}); {}. Backing off to 1-2 minutes between "
        "attempts instead of fighting",
        config_.mqtt_client_id, conflict_.streak(), conflict_.last_evidence(), kConflictFix);
  } else if (change == ConflictWatch::Change::cleared) {
    log_info("the client id conflict of {} is over: no other client took the session for a while",
             config_.mqtt_client_id);
  } else {
    return;
  }
  if (subscribed_) publish_status(nullptr);  // the retained status says so too
}

void Session::run(const std::atomic<bool>& stop) {
  auto tick = [this] {
    if (handlers_.on_tick) handlers_.on_tick();
  };
  while (!stop) {
    if (connector_.joinable()) {
      if (!connect_returned_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        tick();
        continue;
      }
      finish_connect();
      continue;
    }
    if (!socket_open_) {
      if (Clock::now() < next_attempt_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        tick();
        continue;
      }
      start_connect();
      continue;
    }
    const int rc = mosquitto_loop(client_.get(), 100, 1);
    if (rc != MOSQ_ERR_SUCCESS && socket_open_) {
      if (connected_) {
        // on_disconnect normally got here first.
        connection_ended(fmt::format("connection to {} lost: {}", broker_name(), describe_rc(rc)),
                         rc != MOSQ_ERR_KEEPALIVE);
      } else if (rc == MOSQ_ERR_ERRNO) {
        attempt_failed(fmt::format("broker {} unreachable: {}", broker_name(), describe_rc(rc)));
      } else {
        // Closed before any CONNACK. An MQTT 5 CONNECT that a 3.1.1-only broker cannot read
        // ends this way too (RabbitMQ 3.10 says nothing): the next attempt asks in 3.1.1 first.
        if (v5_ && library_error_.empty()) suspect_mqtt311_only_ = true;
        attempt_failed(fmt::format(
            "broker {} closed the connection without answering CONNECT: {}{}", broker_name(),
            describe_rc(rc), protocol_problem_.empty() ? "" : "; " + protocol_problem_));
      }
    }
    const Clock::time_point now = Clock::now();
    if (socket_open_ && !connected_ && now - socket_opened_ > connect_timeout_) {
      // shutdown(2) ends a connect that is still waiting for its SYN-ACK, or a CONNECT nobody
      // answers; libmosquitto then sees the socket fail and closes it itself.
      if (const int fd = mosquitto_socket(client_.get()); fd >= 0) ::shutdown(fd, SHUT_RDWR);
      mosquitto_loop(client_.get(), 10, 1);
      if (socket_open_)
        attempt_failed(fmt::format("broker {} did not answer within {:g} s", broker_name(),
                                   std::chrono::duration<double>(connect_timeout_).count()));
    } else if (connected_ && !subscribed_ && now - connack_at_ > connect_timeout_) {
      // A broker that accepts us but never acknowledges the subscriptions serves nothing. Ended
      // here first, so that the close below is not taken for the broker's doing.
      connection_ended(
          fmt::format("broker {} did not acknowledge the subscriptions within {:g} s",
                      broker_name(), std::chrono::duration<double>(connect_timeout_).count()),
          false);
      if (const int fd = mosquitto_socket(client_.get()); fd >= 0) ::shutdown(fd, SHUT_RDWR);
      mosquitto_loop(client_.get(), 10, 1);
    } else if (connected_) {
      if (subscribed_ && !stable_ && now - connack_at_ >= policy_.limits().stable_after) {
        stable_ = true;
        policy_.connection_stable();
      }
      conflict_changed(conflict_.tick(now));
    }
    tick();
  }
}

std::optional<int> Session::publish(const std::string& topic, const std::string& payload,
                                    bool retain, const ReplyTo* reply,
                                    const UserProperties* user_properties) {
  PropertyList props;
  if (v5_) {
    mosquitto_property* list = nullptr;
    if (reply && !reply->correlation_data.empty())
      mosquitto_property_add_binary(&list, MQTT_PROP_CORRELATION_DATA,
                                    reply->correlation_data.data(),
                                    static_cast<std::uint16_t>(reply->correlation_data.size()));
    if (user_properties)
      for (const auto& [name, value] : *user_properties)
        mosquitto_property_add_string_pair(&list, MQTT_PROP_USER_PROPERTY, name.c_str(),
                                           value.c_str());
    props.reset(list);
  }
  const std::string& target = reply ? reply->topic : topic;
  int mid = 0;
  const int rc =
      mosquitto_publish_v5(client_.get(), &mid, target.c_str(), static_cast<int>(payload.size()),
                           payload.data(), kQos, retain, props.get());
  // NO_CONN: libmosquitto has queued the QoS 1 message and sends it after reconnecting.
  if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_NO_CONN) {
    log_error("cannot publish on {}: {}", target, describe_rc(rc));
    return std::nullopt;
  }
  return mid;
}

void Session::publish_status(int* mid) {
  const std::string payload = online_status_(facts());
  const int rc =
      mosquitto_publish_v5(client_.get(), mid, status_topic_.c_str(),
                           static_cast<int>(payload.size()), payload.data(), kQos, true, nullptr);
  if (rc != MOSQ_ERR_SUCCESS) {
    log_error("cannot publish the online status on {}: {}", status_topic_, describe_rc(rc));
    if (mid) *mid = -1;
  }
}

void Session::close(std::chrono::milliseconds timeout) {
  closing_ = true;
  if (socket_open_) {
    const std::string offline = R"({"status":"offline"})";
    int mid = 0;
    mosquitto_publish_v5(client_.get(), &mid, status_topic_.c_str(),
                         static_cast<int>(offline.size()), offline.data(), kQos, true, nullptr);
    // Flush queued responses and the offline status before disconnecting.
    const auto deadline = Clock::now() + timeout;
    while (connected_ && Clock::now() < deadline && mosquitto_want_write(client_.get()))
      mosquitto_loop(client_.get(), 50, 1);
    // Give the broker a moment to acknowledge the QoS 1 messages just written.
    for (int i = 0; i < 5 && connected_; ++i) mosquitto_loop(client_.get(), 20, 1);
    mosquitto_disconnect_v5(client_.get(), MQTT_RC_NORMAL_DISCONNECTION, nullptr);
    mosquitto_loop(client_.get(), 50, 1);
  }
  connected_ = false;
  socket_open_ = false;
}

void Session::session_started(bool present) {
  // SPEC 3.6: a CONNACK without a session means whatever the broker held for us is gone; the
  // retained status says so, so that a server knows to send again what it had queued.
  const std::int64_t now = unix_now();
  if (present) {
    resumed_ = true;
    if (session_since_ == 0) session_since_ = now;  // older than this run; we know no better
    return;
  }
  resumed_ = false;
  session_since_ = now;
  if (had_session_) {
    ++sessions_lost_;
    log_warning(
        "the broker {} no longer has the session of client id {} (it expired, or the broker lost "
        "it): requests published for this agent while it was away may be lost; the status says "
        "\"session\":\"new\" since {}",
        broker_name(), config_.mqtt_client_id, format_rfc3339(now));
  } else {
    log_info("new broker session for client id {} on {}", config_.mqtt_client_id, broker_name());
  }
  had_session_ = true;
  if (config_.state_dir.empty()) return;
  try {
    keystore::write_file_atomic(config_.state_dir + "/" + kSessionRecord,
                                encode_session_record(config_.mqtt_client_id, now), 0600);
  } catch (const std::exception& error) {
    log_warning("cannot record the session start in {}: {}", config_.state_dir, error.what());
  }
}

void Session::on_connect(mosquitto* client, void* self_ptr, int rc, int flags,
                         const mosquitto_property* /*props*/) {
  auto* self = static_cast<Session*>(self_ptr);
  if (rc != 0) {
    // The broker refused us (bad credentials, not authorised...): not fatal, keep trying.
    std::string reason = self->v5_
                             ? fmt::format("{} (reason 0x{:02X})", mosquitto_reason_string(rc), rc)
                             : mosquitto_connack_string(rc);
    if (self->v5_ && rc == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION) {
      self->protocol_problem_ = fmt::format("broker {}: {}", self->broker_name(), kMqtt5RefusedFix);
      reason += std::string("; ") + kMqtt5RefusedFix;
    }
    self->attempt_failed(
        fmt::format("broker {} refused the connection: {}", self->broker_name(), reason));
    mosquitto_disconnect(client);
    return;
  }
  const Clock::time_point now = Clock::now();
  self->connected_ = true;
  ++self->connections_;
  self->connack_at_ = now;
  self->protocol_problem_.clear();
  self->library_error_.clear();
  self->conflict_.connection_started(now);
  const bool present = (flags & 1) != 0;
  self->session_started(present);
  self->note_state(fmt::format("connected to broker {} as {} (session {})", self->broker_name(),
                               self->config_.mqtt_client_id, present ? "resumed" : "new"));
  // Subscribing again on every connect is harmless with a kept session and required without.
  // One SUBSCRIBE for the three topics: one SUBACK says they are all in place.
  const std::string& base = self->config_.provision_topic_base;
  const std::string filters_text[] = {topics::request_filter(base, TopicKind::request),
                                      topics::request_filter(base, TopicKind::update),
                                      topics::request_filter(base, TopicKind::remove)};
  char* filters[] = {const_cast<char*>(filters_text[0].c_str()),
                     const_cast<char*>(filters_text[1].c_str()),
                     const_cast<char*>(filters_text[2].c_str())};
  const int sub_rc =
      mosquitto_subscribe_multiple(client, &self->subscribe_mid_, 3, filters, kQos, 0, nullptr);
  if (sub_rc != MOSQ_ERR_SUCCESS)
    log_error("cannot subscribe to {}/+/request, update and delete: {}", base, describe_rc(sub_rc));
}

void Session::on_disconnect(mosquitto* /*client*/, void* self_ptr, int rc,
                            const mosquitto_property* /*props*/) {
  auto* self = static_cast<Session*>(self_ptr);
  if (!self->connected_ || self->closing_) {
    self->connected_ = false;
    return;  // before a CONNACK the event loop's error path speaks; after close() nobody needs to
  }
  const Clock::time_point now = Clock::now();
  if (self->v5_ && rc == MQTT_RC_SESSION_TAKEN_OVER)
    self->conflict_changed(self->conflict_.evidence(
        now, "the broker handed the session to another client (MQTT 5 reason 0x8E)"));
  self->connection_ended(fmt::format("disconnected from {}: {}", self->broker_name(),
                                     describe_disconnect(rc, self->v5_)),
                         rc != MOSQ_ERR_KEEPALIVE);
}

void Session::on_subscribe(mosquitto* client, void* self_ptr, int mid, int count,
                           const int* granted, const mosquitto_property* /*props*/) {
  auto* self = static_cast<Session*>(self_ptr);
  auto refused = [&](int code) { return code > 2; };  // 0x80, or an MQTT 5 reason code
  if (mid == self->status_sub_mid_) {
    if (count > 0 && refused(granted[0])) {
      self->watch_status_ = false;  // a conflict then shows only in the connection pattern
      log_debug(
          "the broker refused a subscription to {}; client id conflicts are seen only by "
          "how the broker drops the connection",
          self->status_topic_);
    }
    return;
  }
  for (int i = 0; i < count; ++i)
    if (refused(granted[i]))
      log_error("the broker refused a subscription ({}); check its ACL for {}/#",
                self->v5_ ? fmt::format("{}, reason 0x{:02X}", mosquitto_reason_string(granted[i]),
                                        granted[i])
                          : fmt::format("reason 0x{:02X}", granted[i]),
                self->config_.provision_topic_base);
  if (mid != self->subscribe_mid_) return;
  self->subscribed_ = true;
  log_info("subscribed to {}/+/request, update and delete", self->config_.provision_topic_base);
  // Our own status topic, before our status is on it: the retained message the broker sends
  // first is whoever announced themselves last under our client id (SPEC 3.6).
  if (self->watch_status_ &&
      mosquitto_subscribe(client, &self->status_sub_mid_, self->status_topic_.c_str(), kQos) !=
          MOSQ_ERR_SUCCESS)
    self->status_sub_mid_ = -1;
  self->publish_status(&self->online_mid_);
  if (self->online_mid_ == -1 && self->handlers_.on_subscribed) self->handlers_.on_subscribed();
  // Otherwise on_subscribed waits for the broker's PUBACK of the online status, so whoever is
  // told "ready" (systemd) finds the agent announced too.
}

void Session::status_message_seen(const mosquitto_message& message) {
  if (message.payloadlen <= 0 || !connected_) return;
  rapidjson::Document status;
  status.Parse(static_cast<const char*>(message.payload),
               static_cast<std::size_t>(message.payloadlen));
  if (status.HasParseError() || !status.IsObject()) return;
  auto text = [&](const char* name) -> std::string {
    const auto member = status.FindMember(name);
    return member != status.MemberEnd() && member->value.IsString() ? member->value.GetString()
                                                                    : "";
  };
  const std::string instance = text("instance");
  if (text("status") != "online" || instance.empty() || instance == instance_) return;
  conflict_changed(conflict_.evidence(
      Clock::now(), fmt::format("another agent (instance {}) announced itself online on {}",
                                escape_controls(instance), status_topic_)));
}

void Session::on_log(mosquitto* /*client*/, void* self_ptr, int level, const char* text) {
  auto* self = static_cast<Session*>(self_ptr);
  if ((level & MOSQ_LOG_ERR) != 0 && text != nullptr && self->library_error_.empty())
    self->library_error_ = text;
}

void Session::on_publish(mosquitto* /*client*/, void* self_ptr, int mid, int reason,
                         const mosquitto_property* /*props*/) {
  auto* self = static_cast<Session*>(self_ptr);
  if (self->v5_ && reason >= 0x80)
    log_warning("the broker refused message {}: {} (reason 0x{:02X})", mid,
                mosquitto_reason_string(reason), reason);
  if (self->handlers_.on_published) self->handlers_.on_published(mid);
  if (mid != self->online_mid_) return;
  self->online_mid_ = -1;
  if (self->handlers_.on_subscribed) self->handlers_.on_subscribed();
}

void Session::on_message(mosquitto* /*client*/, void* self_ptr, const mosquitto_message* message,
                         const mosquitto_property* props) {
  auto* self = static_cast<Session*>(self_ptr);
  if (message->topic && self->status_topic_ == message->topic) {
    self->status_message_seen(*message);
    return;
  }
  auto parsed = parse_request_topic(message->topic, self->config_.provision_topic_base);
  if (!parsed) return;  // our own response echoes never match
  InboundMessage inbound;
  inbound.topic = message->topic;
  inbound.device_id = std::move(parsed->first);
  inbound.kind = parsed->second;
  inbound.payload_bytes = static_cast<std::size_t>(std::max(message->payloadlen, 0));
  // An oversized payload is answered by its size alone: never copied (SPEC section 3.5).
  if (message->payloadlen > 0 &&
      inbound.payload_bytes <= static_cast<std::size_t>(self->config_.max_payload))
    inbound.payload.assign(static_cast<const char*>(message->payload), inbound.payload_bytes);
  if (props) {
    std::uint32_t expiry = 0;
    if (mosquitto_property_read_int32(props, MQTT_PROP_MESSAGE_EXPIRY_INTERVAL, &expiry, false))
      inbound.expires_at_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count() +
                              static_cast<std::int64_t>(expiry) * 1000;
    char* response_topic = nullptr;
    if (mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &response_topic, false)) {
      inbound.response_topic = response_topic;
      std::free(response_topic);
      void* data = nullptr;
      std::uint16_t length = 0;
      if (mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &data, &length,
                                         false)) {
        inbound.correlation_data.assign(static_cast<const char*>(data), length);
        std::free(data);
      }
    }
    // A W3C traceparent user property is echoed on the response and logged (SPEC 3.6); anything
    // not in its exact form is ignored, so nothing from the wire reaches a log field unchecked.
    bool skip_first = false;
    for (const mosquitto_property* at = props;;) {
      char* name = nullptr;
      char* value = nullptr;
      at = mosquitto_property_read_string_pair(at, MQTT_PROP_USER_PROPERTY, &name, &value,
                                               skip_first);
      skip_first = true;
      if (!at) break;
      if (name && value && std::string_view(name) == "traceparent" && is_traceparent(value))
        inbound.traceparent = value;
      std::free(name);
      std::free(value);
    }
  }
  self->handlers_.on_request(std::move(inbound));
}

}  // namespace pa::mqtt
