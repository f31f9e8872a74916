#include "mqtt/client.hpp"

#include <fmt/format.h>
#include <mqtt_protocol.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <system_error>

#include "keystore/file_util.hpp"

namespace pa::mqtt {

void init_library() {
  static std::once_flag once;
  std::call_once(once, [] {
    mosquitto_lib_init();
    std::atexit([] { mosquitto_lib_cleanup(); });
  });
}

std::string describe_rc(int rc) {
  if (rc == MOSQ_ERR_ERRNO) {
    // libmosquitto 2 already describes MOSQ_ERR_ERRNO with strerror(errno): say it once.
    const std::string system = std::strerror(errno);
    const std::string library = mosquitto_strerror(rc);
    return library == system ? system : fmt::format("{} ({})", library, system);
  }
  return mosquitto_strerror(rc);
}

TemporaryFile::TemporaryFile(std::string pattern, std::string_view data) {
  keystore::UniqueFd fd(::mkstemp(pattern.data()));
  if (!fd) throw std::system_error(errno, std::generic_category(), "mkstemp");
  const ssize_t written = ::write(fd.get(), data.data(), data.size());
  if (written != static_cast<ssize_t>(data.size())) {
    const int error = written < 0 ? errno : EIO;
    ::unlink(pattern.c_str());  // a throwing constructor runs no destructor
    throw std::system_error(error, std::generic_category(), "write");
  }
  path_ = std::move(pattern);
}

TemporaryFile& TemporaryFile::operator=(TemporaryFile&& other) noexcept {
  if (this != &other) {
    if (!path_.empty()) ::unlink(path_.c_str());
    path_ = std::exchange(other.path_, {});
  }
  return *this;
}

TemporaryFile::~TemporaryFile() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

ConnectionSettings connection_settings(const Config& config, std::size_t broker) {
  ConnectionSettings settings;
  const BrokerAddress address =
      broker < config.brokers.size()
          ? config.brokers[broker]
          : BrokerAddress{config.mqtt_host, config.mqtt_port, config.mqtt_use_tls};
  settings.host = address.host;
  settings.port = address.port;
  settings.tls = address.tls;
  settings.keepalive = config.mqtt_keepalive;
  settings.protocol = config.mqtt_protocol;
  settings.user = config.mqtt_user;
  settings.password = config.mqtt_password;
  settings.ca_file = config.mqtt_ca_certs;
  settings.inline_ca_pem = config.inline_ca_pem;
  settings.certfile = config.mqtt_certfile;
  settings.keyfile = config.mqtt_keyfile;
  settings.tls_insecure = config.mqtt_tls_insecure;
  return settings;
}

Client::Client(const std::string& client_id, bool clean_session, void* context) {
  init_library();
  handle_.reset(mosquitto_new(client_id.c_str(), clean_session, context));
  if (!handle_)
    throw ConfigError(fmt::format("cannot create an MQTT client: {}", std::strerror(errno)));
}

Client::~Client() {
  if (!thread_started_) return;
  // After the DISCONNECT the network thread ends by itself; joining it (not cancelling it, which
  // can leave one of libmosquitto's mutexes locked, as ThreadSanitizer saw) is quick, since the
  // callers reach the broker before they start the thread (send connects first, the check
  // probe opens a TCP connection first).
  mosquitto_disconnect(handle_.get());
  mosquitto_loop_stop(handle_.get(), false);
}

void Client::configure(const ConnectionSettings& settings) {
  using Setting = ConnectionSettingError::Setting;
  settings_ = settings;
  mosquitto* client = handle_.get();
  mosquitto_int_option(
      client, MOSQ_OPT_PROTOCOL_VERSION,
      settings.protocol == MqttProtocol::v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311);
  if (settings.tcp_nodelay) mosquitto_int_option(client, MOSQ_OPT_TCP_NODELAY, 1);
  if (settings.user) {
    const char* password = settings.password ? settings.password->c_str() : nullptr;
    const int rc = mosquitto_username_pw_set(client, settings.user->c_str(), password);
    if (rc != MOSQ_ERR_SUCCESS)
      throw ConnectionSettingError(Setting::credentials, rc,
                                   "invalid MQTT_USER: libmosquitto refused the credentials");
  }
  if (!settings.tls) return;

  std::optional<std::string> ca = settings.ca_file;
  if (!ca && settings.inline_ca_pem) {
    try {
      inline_ca_ = TemporaryFile("/tmp/provision-agent-ca-XXXXXX", *settings.inline_ca_pem);
    } catch (const std::system_error&) {
      throw ConnectionSettingError(Setting::inline_ca, MOSQ_ERR_SUCCESS,
                                   "cannot write the broker-config caCert to a temporary file");
    }
    ca = inline_ca_.path();
  }
  if (!ca) mosquitto_int_option(client, MOSQ_OPT_TLS_USE_OS_CERTS, 1);
  const int rc =
      mosquitto_tls_set(client, ca ? ca->c_str() : nullptr, ca ? nullptr : "/etc/ssl/certs",
                        settings.certfile ? settings.certfile->c_str() : nullptr,
                        settings.keyfile ? settings.keyfile->c_str() : nullptr, nullptr);
  if (rc != MOSQ_ERR_SUCCESS)
    throw ConnectionSettingError(
        Setting::tls_files, rc,
        fmt::format("invalid MQTT_CA_CERTS=\"{}\": {}", ca.value_or("system"), describe_rc(rc)));
  if (settings.tls_insecure) mosquitto_tls_insecure_set(client, true);
}

int Client::connect() {
  return mosquitto_connect(handle_.get(), settings_.host.c_str(), settings_.port,
                           settings_.keepalive);
}

int Client::connect_async() {
  return mosquitto_connect_async(handle_.get(), settings_.host.c_str(), settings_.port,
                                 settings_.keepalive);
}

int Client::start_network_thread() {
  const int rc = mosquitto_loop_start(handle_.get());
  thread_started_ = rc == MOSQ_ERR_SUCCESS;
  return rc;
}

}  // namespace pa::mqtt
