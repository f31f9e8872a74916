#pragma once
// The one way to set up libmosquitto: the library's process-wide set-up, a broker's connection
// settings (protocol, credentials, TLS) and an RAII client. Used by the session, `send`, the
// `check` probe, the test support and the benchmarks.
#include <mosquitto.h>

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "config/config.hpp"

namespace pa::mqtt {

// mosquitto_lib_init once per process, mosquitto_lib_cleanup at exit. Thread-safe; Client calls
// it, and so may anyone who uses libmosquitto's library-wide functions first.
void init_library();

// libmosquitto's return code in words; MOSQ_ERR_ERRNO with errno's reason.
std::string describe_rc(int rc);

// Move-only owner of a mosquitto client handle.
struct MosquittoDeleter {
  void operator()(mosquitto* handle) const noexcept { mosquitto_destroy(handle); }
};
using MosquittoHandle = std::unique_ptr<mosquitto, MosquittoDeleter>;

// Owner of a libmosquitto property list (MQTT 5).
struct PropertyDeleter {
  void operator()(mosquitto_property* list) const noexcept { mosquitto_property_free_all(&list); }
};
using PropertyList = std::unique_ptr<mosquitto_property, PropertyDeleter>;

// Owner of a private temporary file (mkstemp, mode 0600), unlinked on destruction.
class TemporaryFile {
 public:
  TemporaryFile() noexcept = default;
  // Writes `data` to a new file named from `pattern` (ending in "XXXXXX", as mkstemp wants).
  // Throws std::system_error (and removes the file) when it cannot be created or written.
  TemporaryFile(std::string pattern, std::string_view data);
  TemporaryFile(TemporaryFile&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  TemporaryFile& operator=(TemporaryFile&& other) noexcept;
  TemporaryFile(const TemporaryFile&) = delete;
  TemporaryFile& operator=(const TemporaryFile&) = delete;
  ~TemporaryFile();

  const std::string& path() const noexcept { return path_; }  // empty when there is no file

 private:
  std::string path_;
};

// How to reach one broker.
struct ConnectionSettings {
  std::string host = "localhost";
  int port = 1883;
  int keepalive = 60;  // seconds
  MqttProtocol protocol = MqttProtocol::v311;
  std::optional<std::string> user;
  std::optional<std::string> password;
  bool tls = false;
  std::optional<std::string> ca_file;        // else inline_ca_pem, else the OS certificate store
  std::optional<std::string> inline_ca_pem;  // the broker-config JSON's caCert
  std::optional<std::string> certfile;       // mutual TLS
  std::optional<std::string> keyfile;
  bool tls_insecure = false;  // no host name verification
  // Small request/response packets: without it, Nagle's algorithm and the broker's delayed ACK
  // add ~40 ms to every reply (measured by bench/run.sh).
  bool tcp_nodelay = true;
};

// The agent's settings for one broker of config.brokers (the first: the session's).
ConnectionSettings connection_settings(const Config& config, std::size_t broker = 0);

// A connection setting libmosquitto refused (or the inline CA that could not be written). what()
// is the agent's one-line message; `setting` and `rc` let a caller word it its own way.
struct ConnectionSettingError : ConfigError {
  enum class Setting { credentials, inline_ca, tls_files };
  ConnectionSettingError(Setting which, int code, const std::string& message)
      : ConfigError(message), setting(which), rc(code) {}
  Setting setting;
  int rc;  // libmosquitto's return code; MOSQ_ERR_SUCCESS for the inline CA
};

// A libmosquitto client with its settings applied. Not movable: libmosquitto's callbacks hold
// the context pointer given here.
class Client {
 public:
  // A client named `client_id`; clean_session false keeps the session on the broker (SPEC
  // section 3). `context` is what every callback gets. Throws ConfigError when libmosquitto
  // cannot make one.
  Client(const std::string& client_id, bool clean_session, void* context);
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  // Disconnects and joins the network thread when start_network_thread() started one.
  ~Client();

  // Protocol version, TCP_NODELAY, credentials and TLS: the CA from `ca_file`, else
  // `inline_ca_pem` written to a private temporary file kept as long as the client (libmosquitto
  // reads the CA when it connects), else the OS certificate store; the client certificate and
  // key; no host name verification when `tls_insecure`. Throws ConnectionSettingError.
  void configure(const ConnectionSettings& settings);
  const ConnectionSettings& settings() const noexcept { return settings_; }

  mosquitto* get() const noexcept { return handle_.get(); }

  // To the configured host and port, blocking on name look-up and TCP (connect) or not (the
  // network loop finishes it). libmosquitto's return code.
  int connect();
  int connect_async();

  // libmosquitto's own network thread (mosquitto_loop_start). Returns its return code.
  int start_network_thread();

 private:
  MosquittoHandle handle_;
  ConnectionSettings settings_;
  TemporaryFile inline_ca_;
  bool thread_started_ = false;
};

}  // namespace pa::mqtt
