#include "mqtt/session.hpp"

#include <fmt/format.h>
#include <mqtt_protocol.h>
#include <unistd.h>

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <thread>
#include <utility>

#include "base/log.hpp"

namespace pa::mqtt {
namespace {

constexpr int kQos = 1;
// A broker that accepted TCP but has not answered CONNECT by then (or whose SYNs vanish) is
// given up on, and the next attempt follows the back-off. Tests shorten it with the undocumented
// PA_CONNECT_TIMEOUT_SECONDS.
constexpr auto kConnectTimeout = std::chrono::seconds(30);

}  // namespace

Session::Session(const Config& config, std::string status_topic, std::string online_payload,
                 Handlers handlers)
    : config_(config),
      status_topic_(std::move(status_topic)),
      online_payload_(std::move(online_payload)),
      handlers_(std::move(handlers)),
      // clean_session=false: the broker keeps our subscriptions and queues QoS 1 requests while
      // we are away (SPEC section 3).
      client_(config.mqtt_client_id, false, this),
      connect_timeout_(test_override_seconds("PA_CONNECT_TIMEOUT_SECONDS", kConnectTimeout)) {
  mosquitto_threaded_set(client_.get(), true);
  mosquitto_connect_v5_callback_set(client_.get(), &Session::on_connect);
  mosquitto_disconnect_v5_callback_set(client_.get(), &Session::on_disconnect);
  mosquitto_subscribe_v5_callback_set(client_.get(), &Session::on_subscribe);
  mosquitto_message_v5_callback_set(client_.get(), &Session::on_message);
  mosquitto_publish_v5_callback_set(client_.get(), &Session::on_publish);
  mosquitto_log_callback_set(client_.get(), &Session::on_log);
  client_.configure(connection_settings(config));
  if (config.mqtt_use_tls && config.mqtt_tls_insecure)
    log_warning("MQTT_TLS_INSECURE is on: the broker's certificate host name is not verified");

  if (config.mqtt_protocol == MqttProtocol::v5) {
    // libmosquitto 2.0 has no asynchronous connect that takes CONNECT properties, but keeps
    // those of the last mosquitto_connect_bind_v5() for every later connect. That call stores
    // them before it checks its arguments, so an invalid port stores them without connecting.
    mosquitto_property* list = nullptr;
    mosquitto_property_add_int32(&list, MQTT_PROP_SESSION_EXPIRY_INTERVAL,
                                 static_cast<std::uint32_t>(config.session_expiry));
    const PropertyList props(list);
    const int rc = mosquitto_connect_bind_v5(client_.get(), config.mqtt_host.c_str(), -1,
                                             config.mqtt_keepalive, nullptr, props.get());
    if (rc != MOSQ_ERR_INVAL) throw ConfigError("cannot set the MQTT 5 session expiry");
  }

  const std::string offline = R"({"status":"offline"})";
  if (mosquitto_will_set_v5(client_.get(), status_topic_.c_str(), static_cast<int>(offline.size()),
                            offline.data(), kQos, true, nullptr) != MOSQ_ERR_SUCCESS)
    throw ConfigError("cannot set the MQTT will");
}

std::string Session::state_text() const {
  return last_state_;
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
  connect_returned_ = false;
  connector_ = std::thread([this] {
    // The asynchronous connect resolves the name (blocking, here) and starts a non-blocking TCP
    // connect; the event loop finishes it.
    connect_rc_ = mosquitto_connect_bind_async(client_.get(), config_.mqtt_host.c_str(),
                                               config_.mqtt_port, config_.mqtt_keepalive, nullptr);
    connect_errno_ = errno;
    connect_returned_ = true;
  });
}

void Session::finish_connect() {
  connector_.join();
  if (connect_rc_ != MOSQ_ERR_SUCCESS) {
    errno = connect_errno_;
    schedule_retry(fmt::format("broker {}:{} unreachable: {}", config_.mqtt_host, config_.mqtt_port,
                               describe_rc(connect_rc_)));
    return;
  }
  socket_open_ = true;
  socket_opened_ = std::chrono::steady_clock::now();
}

void Session::schedule_retry(const std::string& cause) {
  connected_ = false;
  socket_open_ = false;
  // "A TLS error occurred" alone does not say what to fix; OpenSSL's reason does.
  const std::string reason =
      library_error_.empty() ? cause : fmt::format("{} ({})", cause, library_error_);
  library_error_.clear();
  // 1 s doubling to 60 s; the jitter (half to full delay) keeps a fleet of Pis that lost the
  // same broker from reconnecting in lock step.
  const double base = std::min(60.0, static_cast<double>(1u << std::min(attempts_, 6)));
  ++attempts_;
  std::uniform_real_distribution<double> spread(base / 2, base);
  const auto delay = std::chrono::duration<double>(spread(jitter_));
  next_attempt_ = std::chrono::steady_clock::now() +
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(delay);
  note_state(fmt::format("{}; retrying with back-off", reason));
  log_debug("next connection attempt in {:.1f} s", delay.count());
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
      if (std::chrono::steady_clock::now() < next_attempt_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        tick();
        continue;
      }
      start_connect();
      continue;
    }
    const int rc = mosquitto_loop(client_.get(), 100, 1);
    if (rc != MOSQ_ERR_SUCCESS && socket_open_)
      schedule_retry(fmt::format("connection to {}:{} lost: {}", config_.mqtt_host,
                                 config_.mqtt_port, describe_rc(rc)));
    if (socket_open_ && !connected_ &&
        std::chrono::steady_clock::now() - socket_opened_ > connect_timeout_) {
      // shutdown(2) ends a connect that is still waiting for its SYN-ACK, or a CONNECT nobody
      // answers; libmosquitto then sees the socket fail and closes it itself.
      if (const int fd = mosquitto_socket(client_.get()); fd >= 0) ::shutdown(fd, SHUT_RDWR);
      mosquitto_loop(client_.get(), 10, 1);
      schedule_retry(fmt::format("broker {}:{} did not answer within {:g} s", config_.mqtt_host,
                                 config_.mqtt_port,
                                 std::chrono::duration<double>(connect_timeout_).count()));
    }
    tick();
  }
}

std::optional<int> Session::publish(const std::string& topic, const std::string& payload,
                                    bool retain, const ReplyTo* reply) {
  PropertyList props;
  if (reply) {
    mosquitto_property* list = nullptr;
    if (!reply->correlation_data.empty())
      mosquitto_property_add_binary(&list, MQTT_PROP_CORRELATION_DATA,
                                    reply->correlation_data.data(),
                                    static_cast<std::uint16_t>(reply->correlation_data.size()));
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

void Session::close(std::chrono::milliseconds timeout) {
  if (socket_open_) {
    const std::string offline = R"({"status":"offline"})";
    int mid = 0;
    mosquitto_publish_v5(client_.get(), &mid, status_topic_.c_str(),
                         static_cast<int>(offline.size()), offline.data(), kQos, true, nullptr);
    // Flush queued responses and the offline status before disconnecting.
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (connected_ && std::chrono::steady_clock::now() < deadline &&
           mosquitto_want_write(client_.get()))
      mosquitto_loop(client_.get(), 50, 1);
    // Give the broker a moment to acknowledge the QoS 1 messages just written.
    for (int i = 0; i < 5 && connected_; ++i) mosquitto_loop(client_.get(), 20, 1);
    mosquitto_disconnect_v5(client_.get(), MQTT_RC_NORMAL_DISCONNECTION, nullptr);
    mosquitto_loop(client_.get(), 50, 1);
  }
  connected_ = false;
  socket_open_ = false;
}

void Session::on_connect(mosquitto* client, void* self_ptr, int rc, int flags,
                         const mosquitto_property* /*props*/) {
  auto* self = static_cast<Session*>(self_ptr);
  if (rc != 0) {
    // The broker refused us (bad credentials, not authorised...): not fatal, keep trying.
    self->schedule_retry(fmt::format(
        "broker {}:{} refused the connection: {}", self->config_.mqtt_host, self->config_.mqtt_port,
        self->config_.mqtt_protocol == MqttProtocol::v5 ? mosquitto_reason_string(rc)
                                                        : mosquitto_connack_string(rc)));
    mosquitto_disconnect(client);
    return;
  }
  self->connected_ = true;
  // CONNACK flags bit 0: session present.
  if (self->connections_++ > 0 && (flags & 1) == 0) ++self->sessions_lost_;
  self->attempts_ = 0;
  self->library_error_.clear();
  self->note_state(fmt::format("connected to broker {}:{} as {}", self->config_.mqtt_host,
                               self->config_.mqtt_port, self->config_.mqtt_client_id));
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
  const bool was_connected = self->connected_;
  self->connected_ = false;
  if (rc != 0 && was_connected)
    self->schedule_retry(fmt::format("disconnected from {}:{}: {}", self->config_.mqtt_host,
                                     self->config_.mqtt_port, describe_rc(rc)));
}

void Session::on_subscribe(mosquitto* client, void* self_ptr, int mid, int count,
                           const int* granted, const mosquitto_property* /*props*/) {
  auto* self = static_cast<Session*>(self_ptr);
  for (int i = 0; i < count; ++i)
    if (granted[i] > kQos)  // 0x80: the broker refused the subscription (ACL)
      log_error("the broker refused a subscription (reason {}); check its ACL for {}/#", granted[i],
                self->config_.provision_topic_base);
  if (mid != self->subscribe_mid_) return;
  const int rc = mosquitto_publish_v5(client, &self->online_mid_, self->status_topic_.c_str(),
                                      static_cast<int>(self->online_payload_.size()),
                                      self->online_payload_.data(), kQos, true, nullptr);
  log_info("subscribed to {}/+/request, update and delete", self->config_.provision_topic_base);
  if (rc != MOSQ_ERR_SUCCESS) {
    log_error("cannot publish the online status on {}: {}", self->status_topic_, describe_rc(rc));
    self->online_mid_ = -1;
    if (self->handlers_.on_subscribed) self->handlers_.on_subscribed();
  }
  // Otherwise on_subscribed waits for the broker's PUBACK of the online status, so whoever is
  // told "ready" (systemd) finds the agent announced too.
}

void Session::on_log(mosquitto* /*client*/, void* self_ptr, int level, const char* text) {
  auto* self = static_cast<Session*>(self_ptr);
  if ((level & MOSQ_LOG_ERR) != 0 && text != nullptr && self->library_error_.empty())
    self->library_error_ = text;
}

void Session::on_publish(mosquitto* /*client*/, void* self_ptr, int mid, int /*reason*/,
                         const mosquitto_property* /*props*/) {
  auto* self = static_cast<Session*>(self_ptr);
  if (self->handlers_.on_published) self->handlers_.on_published(mid);
  if (mid != self->online_mid_) return;
  self->online_mid_ = -1;
  if (self->handlers_.on_subscribed) self->handlers_.on_subscribed();
}

void Session::on_message(mosquitto* /*client*/, void* self_ptr, const mosquitto_message* message,
                         const mosquitto_property* props) {
  auto* self = static_cast<Session*>(self_ptr);
  auto parsed = parse_request_topic(message->topic, self->config_.provision_topic_base);
  if (!parsed) return;  // our own status/response echoes never match
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
  }
  self->handlers_.on_request(std::move(inbound));
}

}  // namespace pa::mqtt
