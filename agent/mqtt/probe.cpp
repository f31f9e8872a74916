#include "mqtt/probe.hpp"

#include <fmt/format.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netdb.h>
#include <poll.h>
#include <rapidjson/document.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "keystore/file_util.hpp"
#include "mqtt/client.hpp"
#include "mqtt/session.hpp"
#include "protocol/protocol.hpp"

namespace pa::mqtt {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// What the probe's network thread saw; written from libmosquitto's callbacks.
struct ProbeState {
  std::mutex mutex;
  std::condition_variable changed;
  std::optional<int> connack;
  std::optional<int> disconnect_rc;
  int disconnect_errno = 0;
  std::vector<std::string> errors;          // libmosquitto's error log lines (OpenSSL's reasons)
  std::map<int, std::vector<int>> subacks;  // SUBSCRIBE mid -> granted QoS or reason codes
  std::optional<std::string> status;        // the first message on the agent's status topic
};

void on_probe_connect(mosquitto*, void* state_ptr, int rc, int, const mosquitto_property*) {
  auto* state = static_cast<ProbeState*>(state_ptr);
  std::lock_guard<std::mutex> lock(state->mutex);
  if (!state->connack) state->connack = rc;
  state->changed.notify_all();
}

void on_probe_disconnect(mosquitto*, void* state_ptr, int rc, const mosquitto_property*) {
  const int error = errno;
  auto* state = static_cast<ProbeState*>(state_ptr);
  std::lock_guard<std::mutex> lock(state->mutex);
  if (!state->disconnect_rc) {
    state->disconnect_rc = rc;
    state->disconnect_errno = error;
  }
  state->changed.notify_all();
}

void on_probe_subscribe(mosquitto*, void* state_ptr, int mid, int count, const int* granted,
                        const mosquitto_property*) {
  auto* state = static_cast<ProbeState*>(state_ptr);
  std::lock_guard<std::mutex> lock(state->mutex);
  state->subacks[mid].assign(granted, granted + count);
  state->changed.notify_all();
}

void on_probe_message(mosquitto*, void* state_ptr, const mosquitto_message* message,
                      const mosquitto_property*) {
  auto* state = static_cast<ProbeState*>(state_ptr);
  std::lock_guard<std::mutex> lock(state->mutex);
  if (!state->status && message->payloadlen > 0)
    state->status.emplace(static_cast<const char*>(message->payload),
                          static_cast<std::size_t>(message->payloadlen));
  state->changed.notify_all();
}

void on_probe_log(mosquitto*, void* state_ptr, int level, const char* text) {
  if (level != MOSQ_LOG_ERR || !text) return;
  auto* state = static_cast<ProbeState*>(state_ptr);
  std::lock_guard<std::mutex> lock(state->mutex);
  if (state->errors.size() < 8) state->errors.emplace_back(text);
}

std::string version_name(MqttProtocol protocol) {
  return protocol == MqttProtocol::v5 ? "MQTT 5" : "MQTT 3.1.1";
}

// The first TLS error libmosquitto logged ("OpenSSL Error[0]: ...certificate verify failed").
std::string openssl_error(const ProbeState& state) {
  for (const std::string& line : state.errors)
    if (line.find("SSL") != std::string::npos || line.find("TLS") != std::string::npos) return line;
  return {};
}

bool is_credentials_refusal(MqttProtocol protocol, int rc) {
  if (protocol == MqttProtocol::v5)
    return rc == MQTT_RC_BAD_USERNAME_OR_PASSWORD || rc == MQTT_RC_NOT_AUTHORIZED ||
           rc == MQTT_RC_BANNED;
  return rc == CONNACK_REFUSED_BAD_USERNAME_PASSWORD || rc == CONNACK_REFUSED_NOT_AUTHORIZED;
}

Finding fail(const std::string& what, std::string why, std::string fix) {
  return Finding{false, what, std::move(why), std::move(fix)};
}

Finding mqtt5_refused(const std::string& what, const std::string& how) {
  return fail(what, fmt::format("the broker refused MQTT 5 ({}); it speaks MQTT 3.1.1", how),
              "set MQTT_PROTOCOL=3.1.1 (brokers such as RabbitMQ before 3.13 speak only 3.1.1)");
}

Finding refused(const Config& config, const std::string& what, int rc) {
  const std::string reason = config.mqtt_protocol == MqttProtocol::v5
                                 ? mosquitto_reason_string(rc)
                                 : mosquitto_connack_string(rc);
  if (is_credentials_refusal(config.mqtt_protocol, rc)) {
    return fail(what,
                config.mqtt_user
                    ? fmt::format("broker refused the credentials of user {}: {}",
                                  *config.mqtt_user, reason)
                    : fmt::format("broker refused a client without credentials (MQTT_USER is not "
                                  "set): {}",
                                  reason),
                "set MQTT_USER and MQTT_PASSWORD (or MQTT_PASSWORD_FILE) to an account the broker "
                "accepts (on mosquitto: mosquitto_passwd)");
  }
  if (config.mqtt_protocol == MqttProtocol::v5 && rc == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION)
    return mqtt5_refused(what, reason);
  if (config.mqtt_protocol == MqttProtocol::v311 && rc == CONNACK_REFUSED_PROTOCOL_VERSION)
    return fail(what, fmt::format("broker refused the MQTT protocol version: {}", reason),
                "look at the broker's log: it does not accept MQTT 3.1.1");
  return fail(what, fmt::format("broker refused the connection: {}", reason),
              "set MQTT_CLIENT_ID to an id the broker accepts, or look at the broker's log");
}

Finding tls_failure(const BrokerAddress& broker, const std::string& what,
                    const std::string& detail) {
  return fail(what, fmt::format("TLS handshake with {} failed: {}", to_string(broker), detail),
              "set MQTT_CA_CERTS to the CA that signed the broker's certificate (and MQTT_CERTFILE/"
              "MQTT_KEYFILE if it wants client certificates), check that the port speaks TLS "
              "(mqtts:// or MQTT_USE_TLS), or MQTT_TLS_INSECURE=true if only the host name "
              "differs");
}

Finding unreachable(const BrokerAddress& broker, const std::string& what,
                    const std::string& detail) {
  return fail(what, fmt::format("cannot reach {}: {}", to_string(broker), detail),
              fmt::format("start the broker or correct MQTT_BROKER_URL (or MQTT_HOST/MQTT_PORT); "
                          "test with: nc -vz {} {}",
                          broker.host, broker.port));
}

// Whether a TCP connection to the broker opens before `deadline`: what went wrong when not. Done
// apart from the MQTT probe so that "unreachable" is told apart from TLS and MQTT refusals.
std::optional<std::string> tcp_problem(const BrokerAddress& broker, Clock::time_point deadline) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(broker.port);
  const int rc = ::getaddrinfo(broker.host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0) return fmt::format("cannot resolve host {}: {}", broker.host, ::gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> addresses(found, &::freeaddrinfo);
  std::string problem = "no address";
  for (const addrinfo* address = found; address; address = address->ai_next) {
    keystore::UniqueFd fd(::socket(address->ai_family,
                                   address->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                                   address->ai_protocol));
    if (!fd) {
      problem = strerror(errno);
      continue;
    }
    int error = 0;
    if (::connect(fd.get(), address->ai_addr, address->ai_addrlen) != 0) {
      error = errno;
      if (error == EINPROGRESS) {
        const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
        pollfd poll_fd{fd.get(), POLLOUT, 0};
        const int ready = ::poll(&poll_fd, 1, static_cast<int>(std::max<long>(0, left.count())));
        socklen_t length = sizeof error;
        if (ready <= 0) {
          error = ETIMEDOUT;
        } else if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &length) != 0) {
          error = errno;
        }
      }
    }
    if (error == 0) return std::nullopt;
    problem = error == ETIMEDOUT ? "no answer in time" : strerror(error);
  }
  return problem;
}

// How far one probe connection got.
struct Probe {
  std::optional<Finding> setup_failure;  // the client could not even try
  int connect_rc = MOSQ_ERR_SUCCESS;     // mosquitto_connect_async's
  int connect_errno = 0;
  std::optional<int> connack;
  bool subscribe_sent = false;
  std::optional<std::vector<int>> granted;  // the SUBACK of the request topics
  std::optional<int> disconnect_rc;
  int disconnect_errno = 0;
  std::vector<std::string> errors;
  std::optional<std::string> status;  // the agent's retained status
};

Probe run_probe(const Config& config, const BrokerAddress& broker, MqttProtocol protocol,
                Clock::time_point deadline, bool subscribe, const std::string& what) {
  Probe probe;
  ProbeState state;
  std::optional<Client> client;
  try {
    client.emplace(config.mqtt_client_id + "-check", true, &state);
  } catch (const ConfigError& error) {
    probe.setup_failure = fail(what, error.what(), "free some memory and run the check again");
    return probe;
  }
  mosquitto* handle = client->get();
  mosquitto_connect_v5_callback_set(handle, on_probe_connect);
  mosquitto_disconnect_v5_callback_set(handle, on_probe_disconnect);
  mosquitto_subscribe_v5_callback_set(handle, on_probe_subscribe);
  mosquitto_message_v5_callback_set(handle, on_probe_message);
  mosquitto_log_callback_set(handle, on_probe_log);
  // The same credentials and TLS settings as the agent's session, worded as FAIL lines.
  ConnectionSettings settings = connection_settings(config);
  settings.host = broker.host;
  settings.port = broker.port;
  settings.tls = broker.tls;
  settings.protocol = protocol;
  try {
    client->configure(settings);
  } catch (const ConnectionSettingError& error) {
    switch (error.setting) {
      case ConnectionSettingError::Setting::credentials:
        probe.setup_failure =
            fail(what, "libmosquitto refused MQTT_USER", "set MQTT_USER to a valid UTF-8 name");
        break;
      case ConnectionSettingError::Setting::inline_ca:
        probe.setup_failure = fail(what, "cannot write the broker-config caCert", "check /tmp");
        break;
      case ConnectionSettingError::Setting::tls_files:
        probe.setup_failure = tls_failure(
            broker, what,
            fmt::format("libmosquitto refused the TLS files: {}", mosquitto_strerror(error.rc)));
        break;
    }
    return probe;
  }
  // Threaded loop + asynchronous connect: the whole probe, TCP and TLS included, is bounded (a
  // blocking connect to a silent host can hang for minutes).
  if (client->start_network_thread() != MOSQ_ERR_SUCCESS) {
    probe.setup_failure = fail(what, "cannot start the MQTT network thread", "run the check again");
    return probe;
  }
  probe.connect_rc = client->connect_async();
  probe.connect_errno = errno;
  std::unique_lock<std::mutex> lock(state.mutex);
  auto finish = [&] {
    probe.connack = state.connack;
    probe.disconnect_rc = state.disconnect_rc;
    probe.disconnect_errno = state.disconnect_errno;
    probe.errors = state.errors;
    probe.status = state.status;
    return probe;
  };
  if (probe.connect_rc != MOSQ_ERR_SUCCESS) return finish();
  state.changed.wait_until(lock, deadline,
                           [&] { return state.connack.has_value() || state.disconnect_rc; });
  if (!subscribe || state.connack.value_or(-1) != 0 || state.disconnect_rc) return finish();

  // Subscribing for real, as the agent does: one SUBSCRIBE for the three request topics.
  const std::string& base = config.provision_topic_base;
  const std::string filters[] = {topics::request_filter(base, TopicKind::request),
                                 topics::request_filter(base, TopicKind::update),
                                 topics::request_filter(base, TopicKind::remove)};
  char* filter_pointers[] = {const_cast<char*>(filters[0].c_str()),
                             const_cast<char*>(filters[1].c_str()),
                             const_cast<char*>(filters[2].c_str())};
  int request_mid = 0;
  lock.unlock();
  const int sub_rc =
      mosquitto_subscribe_multiple(handle, &request_mid, 3, filter_pointers, 1, 0, nullptr);
  lock.lock();
  probe.subscribe_sent = sub_rc == MOSQ_ERR_SUCCESS;
  if (!probe.subscribe_sent) return finish();
  state.changed.wait_until(lock, deadline, [&] {
    return state.subacks.count(request_mid) > 0 || state.disconnect_rc.has_value();
  });
  if (const auto found = state.subacks.find(request_mid); found != state.subacks.end())
    probe.granted = found->second;
  if (!probe.granted || state.disconnect_rc) return finish();

  // The agent's retained status says whether it sees a client id conflict (SPEC 3.6). A broker
  // sends retained messages right after the SUBACK; a short wait covers one that has none.
  const std::string status_topic = topics::agent_status(base, config.mqtt_client_id);
  int status_mid = 0;
  lock.unlock();
  const int status_rc = mosquitto_subscribe(handle, &status_mid, status_topic.c_str(), 1);
  lock.lock();
  if (status_rc == MOSQ_ERR_SUCCESS)
    state.changed.wait_until(lock, std::min(deadline, Clock::now() + milliseconds(1000)), [&] {
      return state.status.has_value() || state.disconnect_rc.has_value();
    });
  return finish();
}

bool is_refusal(int granted) {
  return granted < 0 || granted > 2;  // 0x80 (3.1.1) or an MQTT 5 reason code from 0x80 up
}

std::string sub_reason(MqttProtocol protocol, int granted) {
  if (protocol == MqttProtocol::v5)
    return fmt::format("{} (0x{:02X})", mosquitto_reason_string(granted), granted);
  return fmt::format("refused (0x{:02X})", granted);
}

}  // namespace

std::vector<Finding> check_broker(const Config& config, const BrokerAddress& broker,
                                  std::chrono::milliseconds timeout) {
  const std::string what = "broker " + to_string(broker);
  const auto deadline = Clock::now() + timeout;
  if (std::optional<std::string> problem = tcp_problem(broker, deadline))
    return {unreachable(broker, what, *problem)};
  const Probe probe = run_probe(config, broker, config.mqtt_protocol, deadline, true, what);
  if (probe.setup_failure) return {*probe.setup_failure};
  if (probe.connect_rc == MOSQ_ERR_EAI)
    return {unreachable(broker, what, fmt::format("cannot resolve host {}", broker.host))};
  if (probe.connect_rc == MOSQ_ERR_ERRNO)
    return {unreachable(broker, what, strerror(probe.connect_errno))};
  if (probe.connect_rc == MOSQ_ERR_TLS) {
    ProbeState errors;
    errors.errors = probe.errors;
    const std::string detail = openssl_error(errors);
    return {tls_failure(broker, what, detail.empty() ? "the TLS set-up failed" : detail)};
  }
  if (probe.connect_rc != MOSQ_ERR_SUCCESS)
    return {unreachable(broker, what, mosquitto_strerror(probe.connect_rc))};

  if (!probe.connack) {
    ProbeState errors;
    errors.errors = probe.errors;
    const std::string tls_detail = openssl_error(errors);
    if (broker.tls && !tls_detail.empty()) return {tls_failure(broker, what, tls_detail)};
    if (!probe.disconnect_rc)
      return {fail(what,
                   fmt::format("no answer from {} within {} s", to_string(broker),
                               std::chrono::duration_cast<std::chrono::seconds>(timeout).count()),
                   fmt::format("check that {} is an MQTT broker reachable from here and whether "
                               "it expects TLS (mqtts://); test with: nc -vz {} {}",
                               to_string(broker), broker.host, broker.port))};
    // RabbitMQ before 3.13 closes the connection at an MQTT 5 CONNECT without a word: ask again
    // in 3.1.1 to tell that from a port that wants TLS.
    if (config.mqtt_protocol == MqttProtocol::v5 &&
        accepts_protocol(config, broker, MqttProtocol::v311,
                         std::max(milliseconds(2000), std::chrono::duration_cast<milliseconds>(
                                                          deadline - Clock::now()))))
      return {mqtt5_refused(what, "it closed the connection at the MQTT 5 CONNECT")};
    const int lost = *probe.disconnect_rc;
    if (lost == MOSQ_ERR_ERRNO && probe.disconnect_errno != 0)
      return {unreachable(broker, what, strerror(probe.disconnect_errno))};
    if (lost == MOSQ_ERR_CONN_LOST || lost == MOSQ_ERR_PROTOCOL) {
      return {fail(what,
                   fmt::format("{} closed the connection before answering ({})", to_string(broker),
                               mosquitto_strerror(lost)),
                   broker.tls ? std::string("check that the broker's port speaks TLS (mqtts://)")
                              : "the broker may expect TLS: use mqtts:// (MQTT_USE_TLS=true; port "
                                "8883 is usually TLS)")};
    }
    if (!probe.errors.empty()) return {unreachable(broker, what, probe.errors.front())};
    return {unreachable(broker, what, mosquitto_strerror(lost))};
  }
  if (*probe.connack != 0) return {refused(config, what, *probe.connack)};

  const std::string& base = config.provision_topic_base;
  const std::string topics_text = fmt::format("{}/+/request, update and delete", base);
  const std::string who = config.mqtt_user ? "user " + *config.mqtt_user : "an anonymous client";
  const std::string acl_fix = fmt::format(
      "let {} read (subscribe to) {}/# in the broker's ACL (mosquitto: acl_file; RabbitMQ: the "
      "user's configure, write and read permissions on the MQTT vhost and its topic permissions), "
      "and look at the broker's log",
      who, base);
  if (!probe.subscribe_sent)
    return {fail(what, fmt::format("cannot subscribe to {}", topics_text), acl_fix)};
  if (!probe.granted) {
    if (probe.disconnect_rc)
      return {fail(what,
                   fmt::format("the broker accepted the connection but closed it at SUBSCRIBE to "
                               "{}: {} may connect but not subscribe (or the broker cannot keep "
                               "the session's queue)",
                               topics_text, who),
                   acl_fix)};
    return {fail(what, fmt::format("no SUBACK for {} in time", topics_text), acl_fix)};
  }
  for (const int granted : *probe.granted)
    if (is_refusal(granted))
      return {fail(what,
                   fmt::format("the broker refused the subscription to {}: {}", topics_text,
                               sub_reason(config.mqtt_protocol, granted)),
                   acl_fix)};

  std::vector<Finding> findings;
  findings.push_back(Finding{
      true,
      what,
      fmt::format("reachable ({}, TLS {}, {}), subscribed to {}",
                  version_name(config.mqtt_protocol), broker.tls ? "on" : "off",
                  config.mqtt_user ? "user " + *config.mqtt_user : "anonymous", topics_text),
      {}});
  if (probe.status) {
    rapidjson::Document status;
    status.Parse(probe.status->c_str(), probe.status->size());
    if (!status.HasParseError() && status.IsObject() && status.HasMember("client_id_conflict") &&
        status["client_id_conflict"].IsTrue())
      findings.push_back(fail(
          "client id " + config.mqtt_client_id,
          fmt::format("the agent's status on {} reports a client id conflict: another client keeps "
                      "taking its session",
                      to_string(broker)),
          kConflictFix));
  }
  return findings;
}

bool accepts_protocol(const Config& config, const BrokerAddress& broker, MqttProtocol protocol,
                      std::chrono::milliseconds timeout) {
  const Probe probe = run_probe(config, broker, protocol, Clock::now() + timeout, false, {});
  return probe.connack.value_or(-1) == 0;
}

}  // namespace pa::mqtt
