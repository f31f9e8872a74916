// `provision-agent check` (SPEC section 7): everything an operator wants to know before starting
// the service, one OK or FAIL line each, every FAIL with its fix. Everything here reads; nothing
// creates, repairs or removes a file.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>

#include "base/log.hpp"
#include "base/time.hpp"
#include "cli/command.hpp"
#include "cli/findings.hpp"
#include "dispatch/host.hpp"
#include "dispatch/plugin_loader.hpp"
#include "keystore/file_util.hpp"
#include "keystore/inspect.hpp"
#include "mqtt/client.hpp"

namespace pa::cli {
namespace {

// How long the broker probe may take, TCP, TLS and MQTT together.
constexpr auto kBrokerTimeout = std::chrono::seconds(5);

// ---------------------------------------------------------------------------------------------
// Broker probe: a real libmosquitto connection with the configured credentials and TLS, on a
// client id of its own (the agent's would take over a running agent's session) and a clean
// session, so the probe leaves nothing behind on the broker.

struct ProbeResult {
  bool ok = false;
  std::string why;
  std::string fix;
};

// What the network thread saw; written from libmosquitto's callbacks.
struct ProbeState {
  std::mutex mutex;
  std::condition_variable changed;
  std::optional<int> connack;
  std::optional<int> disconnect_rc;
  int disconnect_errno = 0;
  std::vector<std::string> errors;  // libmosquitto's error log lines (OpenSSL's reasons)
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

void on_probe_log(mosquitto*, void* state_ptr, int level, const char* text) {
  if (level != MOSQ_LOG_ERR || !text) return;
  auto* state = static_cast<ProbeState*>(state_ptr);
  std::lock_guard<std::mutex> lock(state->mutex);
  if (state->errors.size() < 8) state->errors.emplace_back(text);
}

std::string endpoint(const Config& config) {
  return fmt::format("{}:{}", config.mqtt_host, config.mqtt_port);
}

// The first TLS error libmosquitto logged ("OpenSSL Error[0]: ...certificate verify failed").
std::string openssl_error(ProbeState& state, bool lock = true) {
  std::unique_lock<std::mutex> guard(state.mutex, std::defer_lock);
  if (lock) guard.lock();
  for (const std::string& line : state.errors) {
    if (line.find("SSL") != std::string::npos || line.find("TLS") != std::string::npos) return line;
  }
  return {};
}

bool is_credentials_refusal(const Config& config, int rc) {
  if (config.mqtt_protocol == MqttProtocol::v5)
    return rc == MQTT_RC_BAD_USERNAME_OR_PASSWORD || rc == MQTT_RC_NOT_AUTHORIZED ||
           rc == MQTT_RC_BANNED;
  return rc == CONNACK_REFUSED_BAD_USERNAME_PASSWORD || rc == CONNACK_REFUSED_NOT_AUTHORIZED;
}

ProbeResult refused(const Config& config, int rc) {
  const std::string reason = config.mqtt_protocol == MqttProtocol::v5
                                 ? mosquitto_reason_string(rc)
                                 : mosquitto_connack_string(rc);
  if (is_credentials_refusal(config, rc)) {
    return {false,
            config.mqtt_user
                ? fmt::format("broker refused the credentials of user {}: {}", *config.mqtt_user,
                              reason)
                : fmt::format("broker refused a client without credentials (MQTT_USER is not "
                              "set): {}",
                              reason),
            "set MQTT_USER and MQTT_PASSWORD (or MQTT_PASSWORD_FILE) to an account the broker "
            "accepts (on mosquitto: mosquitto_passwd)"};
  }
  const bool version = config.mqtt_protocol == MqttProtocol::v5
                           ? rc == MQTT_RC_UNSUPPORTED_PROTOCOL_VERSION
                           : rc == CONNACK_REFUSED_PROTOCOL_VERSION;
  if (version)
    return {false, fmt::format("broker refused the MQTT protocol version: {}", reason),
            "set MQTT_PROTOCOL=3.1.1 (older brokers do not speak MQTT 5)"};
  return {false, fmt::format("broker refused the connection: {}", reason),
          "set MQTT_CLIENT_ID to an id the broker accepts, or look at the broker's log"};
}

ProbeResult tls_failure(const Config& config, const std::string& detail) {
  return {false, fmt::format("TLS handshake with {} failed: {}", endpoint(config), detail),
          "set MQTT_CA_CERTS to the CA that signed the broker's certificate (and MQTT_CERTFILE/"
          "MQTT_KEYFILE if it wants client certificates), check that the port speaks TLS "
          "(MQTT_USE_TLS), or MQTT_TLS_INSECURE=true if only the host name differs"};
}

ProbeResult unreachable(const Config& config, const std::string& detail) {
  return {false, fmt::format("cannot reach {}: {}", endpoint(config), detail),
          fmt::format("start the broker or correct MQTT_HOST/MQTT_PORT (MQTT_BROKER_URL); test "
                      "with: nc -vz {} {}",
                      config.mqtt_host, config.mqtt_port)};
}

// Whether a TCP connection to the broker opens within `timeout`: what went wrong when not. Done
// apart from the MQTT probe so that "unreachable" is told apart from TLS and MQTT refusals.
std::optional<std::string> tcp_problem(const Config& config, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const std::string port = std::to_string(config.mqtt_port);
  const int rc = ::getaddrinfo(config.mqtt_host.c_str(), port.c_str(), &hints, &found);
  if (rc != 0)
    return fmt::format("cannot resolve host {}: {}", config.mqtt_host, ::gai_strerror(rc));
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> addresses(found, &::freeaddrinfo);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
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
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
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
    problem = error == ETIMEDOUT
                  ? fmt::format("no answer within {} s",
                                std::chrono::duration_cast<std::chrono::seconds>(timeout).count())
                  : strerror(error);
  }
  return problem;
}

ProbeResult probe_broker(const Config& config, std::chrono::milliseconds timeout) {
  const auto started = std::chrono::steady_clock::now();
  if (std::optional<std::string> problem = tcp_problem(config, timeout))
    return unreachable(config, *problem);
  timeout -= std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - started);
  ProbeState state;  // outlives the client, whose callbacks write it
  // A client id of its own and a clean session: the probe leaves nothing behind on the broker
  // and never takes a running agent's session over.
  std::optional<mqtt::Client> client;
  try {
    client.emplace(config.mqtt_client_id + "-check", true, &state);
  } catch (const ConfigError& error) {
    return {false, error.what(), "free some memory and run the check again"};
  }
  mosquitto* handle = client->get();
  mosquitto_connect_v5_callback_set(handle, on_probe_connect);
  mosquitto_disconnect_v5_callback_set(handle, on_probe_disconnect);
  mosquitto_log_callback_set(handle, on_probe_log);
  // The same credentials and TLS settings as the agent's session, worded as FAIL lines.
  try {
    client->configure(mqtt::connection_settings(config));
  } catch (const mqtt::ConnectionSettingError& error) {
    switch (error.setting) {
      case mqtt::ConnectionSettingError::Setting::credentials:
        return {false, "libmosquitto refused MQTT_USER", "set MQTT_USER to a valid UTF-8 name"};
      case mqtt::ConnectionSettingError::Setting::inline_ca:
        return {false, "cannot write the broker-config caCert", "check /tmp"};
      case mqtt::ConnectionSettingError::Setting::tls_files:
        break;
    }
    return tls_failure(config, fmt::format("libmosquitto refused the TLS files: {}",
                                           mosquitto_strerror(error.rc)));
  }

  // Threaded loop + asynchronous connect: the whole probe, TCP and TLS included, is bounded by
  // `timeout` (a blocking connect to a silent host can hang for minutes).
  if (client->start_network_thread() != MOSQ_ERR_SUCCESS)
    return {false, "cannot start the MQTT network thread", "run the check again"};
  const int rc = client->connect_async();
  if (rc == MOSQ_ERR_EAI)
    return unreachable(config, fmt::format("cannot resolve host {}", config.mqtt_host));
  if (rc == MOSQ_ERR_ERRNO) return unreachable(config, strerror(errno));
  if (rc == MOSQ_ERR_TLS) {
    const std::string detail = openssl_error(state);
    return tls_failure(config, detail.empty() ? "the TLS set-up failed" : detail);
  }
  if (rc != MOSQ_ERR_SUCCESS) return unreachable(config, mosquitto_strerror(rc));

  std::unique_lock<std::mutex> lock(state.mutex);
  const bool answered = state.changed.wait_for(
      lock, timeout, [&] { return state.connack.has_value() || state.disconnect_rc.has_value(); });
  if (state.connack) {
    if (*state.connack != 0) return refused(config, *state.connack);
    return {true, {}, {}};
  }
  const std::string tls_detail = openssl_error(state, false);
  if (config.mqtt_use_tls && !tls_detail.empty()) return tls_failure(config, tls_detail);
  if (!answered) {
    return {false,
            fmt::format("no answer from {} within {} s", endpoint(config),
                        std::chrono::duration_cast<std::chrono::seconds>(timeout).count()),
            fmt::format("check that {} is an MQTT broker reachable from here and whether it "
                        "expects TLS (MQTT_USE_TLS); test with: nc -vz {} {}",
                        endpoint(config), config.mqtt_host, config.mqtt_port)};
  }
  const int lost = *state.disconnect_rc;
  if (lost == MOSQ_ERR_ERRNO && state.disconnect_errno != 0)
    return unreachable(config, strerror(state.disconnect_errno));
  if (lost == MOSQ_ERR_CONN_LOST || lost == MOSQ_ERR_PROTOCOL) {
    return {false,
            fmt::format("{} closed the connection before answering ({})", endpoint(config),
                        mosquitto_strerror(lost)),
            config.mqtt_use_tls
                ? std::string("check that the broker's port speaks TLS (MQTT_USE_TLS, MQTT_PORT)")
                : "the broker may expect TLS: set MQTT_USE_TLS=true (port 8883 is usually TLS)"};
  }
  if (!state.errors.empty()) return unreachable(config, state.errors.front());
  return unreachable(config, mosquitto_strerror(lost));
}

// ---------------------------------------------------------------------------------------------
// check

std::string config_fix(const ConfigInputs& inputs) {
  if (inputs.env_file)
    return fmt::format(
        "correct the value in {} (provision-agent config shows each value and "
        "its source)",
        *inputs.env_file);
  return "correct the variable or flag named (provision-agent config shows each value and its "
         "source)";
}

void check_broker(const Config& config, std::chrono::milliseconds timeout, Findings& findings) {
  const std::string what = "broker " + endpoint(config);
  const ProbeResult result = probe_broker(config, timeout);
  if (!result.ok) {
    findings.fail(what, result.why, result.fix);
    return;
  }
  findings.ok(fmt::format("{} reachable (MQTT {}, TLS {}, {})", what,
                          enum_name(kMqttProtocolNames, config.mqtt_protocol),
                          config.mqtt_use_tls ? "on" : "off",
                          config.mqtt_user ? "user " + *config.mqtt_user : "anonymous"));
}

void check_key_store(const Config& config, Findings& findings) {
  const std::filesystem::path root = config.keys_dir;
  if (const auto problem = keystore::inspect_root(root, config.key_group)) {
    const Wording wording = word(*problem);
    findings.fail("key store root " + root.string(), wording.why, wording.fix);
    return;
  }
  findings.ok(root_summary(root));
  std::vector<keystore::DeviceReport> devices;
  try {
    devices = keystore::inspect_store(root);
  } catch (const keystore::StoreError& error) {
    findings.fail("key store " + root.string(), error.what(),
                  fmt::format("run the check as the key store's owner (ls -ld {})", root.string()));
    return;
  }
  const auto access = distinct_problems(devices, true);
  for (const WordedProblem& problem : access)
    findings.fail(problem.path, problem.wording.why, problem.wording.fix);
  if (access.empty())
    findings.ok(fmt::format("key store modes and owners ({})", count_devices(devices.size())));
  const auto keys = distinct_problems(devices, false);
  for (const WordedProblem& problem : keys)
    findings.fail(problem.path, problem.wording.why, problem.wording.fix);
  if (keys.empty())
    findings.ok(fmt::format("key pairs consistent ({})", count_devices(devices.size())));
}

void check_plugins(const Config& config, Findings& findings) {
  HostServices services;
  services.config = &config;
  services.agent_id = config.mqtt_client_id;
  const std::string fix_skipped =
      fmt::format("remove it from {} or rebuild it against provision/plugin.h", config.plugin_dir);
  try {
    auto plugins = plugin::PluginSet::load(config, services);
    for (const auto& plugin : plugins.plugins()) {
      std::vector<std::string> actions;
      for (const auto& action : plugin->actions) actions.push_back(action.name);
      findings.ok(fmt::format("plugin {} {} ({})", plugin->name, plugin->version,
                              fmt::join(actions, ", ")));
    }
    for (const auto& skipped : plugins.skipped())
      findings.fail("plugin " + skipped.path, skipped.reason, fix_skipped);
    if (!plugins.find(kActionGenerate))
      findings.fail("plugins in " + config.plugin_dir,
                    fmt::format("no plugin serves {}", kActionGenerate),
                    fmt::format("install the keygen plugin into {} (or set PROVISION_PLUGIN_DIR)",
                                config.plugin_dir));
  } catch (const ConfigError& error) {
    findings.fail("plugins in " + config.plugin_dir, error.what(),
                  "correct PROVISION_PLUGIN_DIR or the folder's mode and owner as named");
  }
}

void check_clock(Findings& findings) {
  const auto now = std::chrono::system_clock::now();
  const std::string what = "system clock";
  if (std::optional<std::string> problem = clock_problem(now)) {
    findings.fail(what, *problem,
                  "wait for time sync (timedatectl status; systemd-timesyncd or another NTP client "
                  "must be running and reach a time server)");
    return;
  }
  findings.ok(fmt::format("{} plausible ({})", what,
                          format_rfc3339(std::chrono::system_clock::to_time_t(now))));
}

// One line per check; 1 when any failed. An invalid configuration is one of the FAIL lines.
int run_check(const ConfigInputs& inputs, std::FILE* out, std::chrono::milliseconds timeout) {
  Findings findings(out);
  std::optional<Config> config;
  try {
    config = load_config(inputs);
    findings.ok("configuration valid");
  } catch (const ConfigError& error) {
    findings.fail("configuration", error.what(), config_fix(inputs));
  }
  if (config) {
    // Plugins and the loader log what they skip; the lines below say it already.
    log_init(LogLevel::error);
    check_broker(*config, timeout, findings);
    check_key_store(*config, findings);
    check_plugins(*config, findings);
  }
  check_clock(findings);
  std::fflush(out);
  return findings.failures() > 0 ? 1 : 0;
}

class CheckCommand : public Command {
 public:
  void define(CLI::App&) override {}
  // An invalid configuration is one of its FAIL lines, not an exit 78.
  int run(const ConfigInputs& inputs) override { return run_check(inputs, stdout, kBrokerTimeout); }
};

}  // namespace

std::unique_ptr<Command> make_check_command() {
  return std::make_unique<CheckCommand>();
}

}  // namespace pa::cli
