#pragma once
// Configuration (SPEC section 2). Sources, strongest first: command-line flags > process
// environment > --env-file > MQTT_BROKER_CONFIG JSON > built-in defaults. An invalid value stops
// start-up with one line naming the variable and the value, and exit status 78.
#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "base/enum_names.hpp"
#include "base/log.hpp"
#include "config/variables.hpp"
#include "keystore/key_pair.hpp"

namespace pa {

// A configuration problem; what() is the one line shown to the operator. Maps to exit 78.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline constexpr int kExitConfig = 78;  // EX_CONFIG

enum class ConfigSource { default_value, broker_config, env_file, environment, flag };
// As `provision-agent config` shows them.
inline constexpr std::array<EnumName<ConfigSource>, 5> kConfigSourceNames{{
    {ConfigSource::default_value, "default"},
    {ConfigSource::broker_config, "broker-config"},
    {ConfigSource::env_file, "env-file"},
    {ConfigSource::environment, "environment"},
    {ConfigSource::flag, "flag"},
}};
const char* to_string(ConfigSource source) noexcept;

enum class E2eePolicy { off, destructive, all };
inline constexpr std::array<EnumName<E2eePolicy>, 3> kE2eePolicyNames{{
    {E2eePolicy::off, "off"},
    {E2eePolicy::destructive, "destructive"},
    {E2eePolicy::all, "all"},
}};

enum class KeyFormat { json, pem };
inline constexpr std::array<EnumName<KeyFormat>, 2> kKeyFormatNames{{
    {KeyFormat::json, "json"},
    {KeyFormat::pem, "pem"},
}};

enum class MqttProtocol { v311, v5 };
// "3.1.1" and "5" are shown; the other spellings are what paho and mosquitto users type.
inline constexpr std::array<EnumName<MqttProtocol>, 8> kMqttProtocolNames{{
    {MqttProtocol::v311, "3.1.1"},
    {MqttProtocol::v5, "5"},
    {MqttProtocol::v311, "311"},
    {MqttProtocol::v311, "mqttv311"},
    {MqttProtocol::v311, "v311"},
    {MqttProtocol::v5, "v5"},
    {MqttProtocol::v5, "mqttv5"},
    {MqttProtocol::v5, "5.0"},
}};

// One broker of MQTT_BROKER_URL's list (SPEC section 3.6).
struct BrokerAddress {
  std::string host;
  int port = 1883;
  bool tls = false;
  bool operator==(const BrokerAddress& other) const {
    return host == other.host && port == other.port && tls == other.tls;
  }
};

// Raw string values per source before typing. Names are the environment names.
struct ConfigInputs {
  std::map<std::string, std::string> flags;
  std::map<std::string, std::string> environment;  // only variables of config_variables()
  std::optional<std::string> env_file;             // path given with --env-file
};

// Plugin options are read from the same sources under this prefix (SPEC section 6).
inline constexpr std::string_view kPluginVariablePrefix = "PROVISION_PLUGIN_";
bool is_plugin_variable(std::string_view name);

// true/false, 1/0, yes/no, on/off (any case); nullopt for anything else.
std::optional<bool> parse_boolean(std::string_view text);

// Reads the process environment for every variable of config_variables() and every
// PROVISION_PLUGIN_* variable.
std::map<std::string, std::string> environment_variables();

// Undocumented, for tests only: `variable` (PA_READY_FALLBACK_SECONDS, PA_CONNECT_TIMEOUT_SECONDS,
// PA_CLOCK_CHECK_SECONDS) shortens one of SPEC section 8's waits, or section 5's check for a
// clock jump. Seconds, fractions allowed, in (0, 3600]; anything else (or nothing) gives
// `standard`.
std::chrono::steady_clock::duration test_override_seconds(const char* variable,
                                                          std::chrono::seconds standard);

// Reads a file by exactly the rules of systemd's EnvironmentFile= (env_file.hpp). Lines systemd
// ignores are logged as warnings; what makes systemd refuse the file (a NUL byte, invalid UTF-8)
// and read errors throw ConfigError naming the file.
std::map<std::string, std::string> parse_env_file(const std::string& path);

// The effective configuration. A default-constructed Config holds the table's built-in defaults
// (config_variables()); load_config fills in the computed ones and what the sources give.
struct Config {
  Config();

  // MQTT
  std::string mqtt_host;  // the first broker's (brokers[0])
  int mqtt_port = 0;
  bool mqtt_use_tls = false;
  // Every broker to try, in order: MQTT_BROKER_URL's list, else MQTT_HOST, MQTT_PORT and
  // MQTT_USE_TLS; never empty after load_config, and the first is always mqtt_host:mqtt_port.
  std::vector<BrokerAddress> brokers;
  std::optional<std::string> mqtt_user;
  std::optional<std::string> mqtt_password;  // from MQTT_PASSWORD_FILE when that is set
  std::optional<std::string> mqtt_ca_certs;  // file; unset = system store
  std::optional<std::string> mqtt_certfile;
  std::optional<std::string> mqtt_keyfile;
  bool mqtt_tls_insecure = false;
  std::string mqtt_client_id;  // computed by load_config unless given
  int mqtt_keepalive = 0;
  MqttProtocol mqtt_protocol{};
  std::int64_t session_expiry = 0;  // MQTT 5 session expiry in seconds
  std::string provision_topic_base;
  std::string keys_topic_base;
  // PEM text from the broker-config JSON's caCert: written to a private file at start-up.
  std::optional<std::string> inline_ca_pem;

  // Key store and plugins
  std::string keys_dir;  // resolved root (PROVISION_KEYS_DIR, PROJECT_ROOT, STATE_DIRECTORY, .)
  std::optional<std::string> project_root;
  // The agent's own files (agent key, intake spool, request ledger): $STATE_DIRECTORY's first
  // entry under systemd, else $XDG_STATE_HOME/provision-agent, else
  // ~/.local/state/provision-agent; never the project folder or the key store (SPEC section 5).
  std::string state_dir;
  std::optional<std::string> key_group;  // PROVISION_KEY_GROUP
  int max_devices = 0;                   // PROVISION_MAX_DEVICES
  std::string plugin_dir;                // PROVISION_PLUGIN_DIR or the compiled-in install folder
  keystore::KeyType key_type{};
  bool csr = false;                                 // PROVISION_CSR
  std::optional<std::string> ca_file;               // PROVISION_CA_FILE
  std::optional<std::int64_t> key_max_age_seconds;  // PROVISION_KEY_MAX_AGE
  int key_pool = 0;                                 // PROVISION_KEY_POOL

  // Requests
  int workers = 1;  // computed by load_config: the number of CPUs unless given
  int queue_max = 0;
  int max_payload = 0;
  E2eePolicy e2ee_policy{};
  std::optional<std::string> agent_key;      // PROVISION_AGENT_KEY
  std::optional<std::string> server_pubkey;  // PROVISION_SERVER_PUBKEY
  int max_skew = 0;
  std::vector<std::string> devices;  // glob patterns
  bool retain_keys = false;
  KeyFormat key_format{};

  // Logging and metrics
  std::optional<std::string> metrics_file;  // PROVISION_METRICS_FILE
  LogLevel log_level{};

  // The effective raw value and its source for every variable (for `config` and config_get).
  struct Entry {
    std::string value;  // empty when unset
    ConfigSource source = ConfigSource::default_value;
    bool set = false;
  };
  std::map<std::string, Entry> entries;
  // PROVISION_PLUGIN_<PLUGIN>_<OPTION> values as given (validated by the plugin loader against
  // what each plugin declares).
  std::map<std::string, Entry> plugin_entries;

  // True when `device` matches one of the PROVISION_DEVICES glob patterns.
  bool serves_device(const std::string& device) const;
};

// Resolves, types and validates every variable. Throws ConfigError (exit 78).
Config load_config(const ConfigInputs& inputs);

// The default client id: "provision-agent-" + first 12 hex digits of /etc/machine-id, the
// host name when there is none. `machine_id_path` is a parameter for tests.
std::string default_client_id(const std::string& machine_id_path = "/etc/machine-id");

// The state folder: $STATE_DIRECTORY (its first entry), else $XDG_STATE_HOME/provision-agent,
// else $HOME/.local/state/provision-agent. Throws ConfigError when none is usable.
std::string default_state_dir();

// Lines for `provision-agent config`: "NAME=value (source)", secrets masked.
std::vector<std::string> describe_config(const Config& config);

}  // namespace pa
