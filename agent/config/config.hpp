#pragma once
// Configuration (SPEC section 2). Sources, strongest first: command-line flags > process
// environment > --env-file > MQTT_BROKER_CONFIG JSON > built-in defaults. An invalid value stops
// start-up with one line naming the variable and the value, and exit status 78.
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "base/log.hpp"
#include "keystore/key_pair.hpp"

namespace pa {

// A configuration problem; what() is the one line shown to the operator. Maps to exit 78.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline constexpr int kExitConfig = 78;  // EX_CONFIG

enum class ConfigSource { default_value, broker_config, env_file, environment, flag };
const char* to_string(ConfigSource source) noexcept;

enum class E2eePolicy { off, destructive, all };
enum class KeyFormat { json, pem };
enum class MqttProtocol { v311, v5 };

// Every variable of SPEC section 2, with its long flag. The table drives flags, `config`
// output and lookup by name (also for plugins through the host's config_get).
struct ConfigVariable {
  const char* env;      // "MQTT_HOST"
  const char* flag;     // "--mqtt-host"
  const char* help;     // one line for --help and agent.env
  bool secret = false;  // masked in `config` output, never returned to plugins
};
const std::vector<ConfigVariable>& config_variables();

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

struct Config {
  // MQTT
  std::string mqtt_host = "localhost";
  int mqtt_port = 1883;
  std::optional<std::string> mqtt_user;
  std::optional<std::string> mqtt_password;  // from MQTT_PASSWORD_FILE when that is set
  bool mqtt_use_tls = false;
  std::optional<std::string> mqtt_ca_certs;  // file; unset = system store
  std::optional<std::string> mqtt_certfile;
  std::optional<std::string> mqtt_keyfile;
  bool mqtt_tls_insecure = false;
  std::string mqtt_client_id;
  int mqtt_keepalive = 60;
  MqttProtocol mqtt_protocol = MqttProtocol::v311;
  std::int64_t session_expiry = 604800;  // MQTT 5 session expiry in seconds
  std::string provision_topic_base = "provision";
  std::string keys_topic_base = "keys";
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
  int max_devices = 10000;               // PROVISION_MAX_DEVICES
  bool csr = false;                      // PROVISION_CSR
  std::optional<std::string> ca_file;    // PROVISION_CA_FILE
  std::optional<std::int64_t> key_max_age_seconds;  // PROVISION_KEY_MAX_AGE
  std::string plugin_dir;                // PROVISION_PLUGIN_DIR or the compiled-in install folder
  keystore::KeyType key_type = keystore::KeyType::rsa2048;

  // Requests
  int workers = 1;  // default: number of CPUs
  int queue_max = 1024;
  int max_payload = 65536;
  E2eePolicy e2ee_policy = E2eePolicy::destructive;
  std::optional<std::string> agent_key;      // PROVISION_AGENT_KEY
  std::optional<std::string> server_pubkey;  // PROVISION_SERVER_PUBKEY
  int max_skew = 300;
  std::vector<std::string> devices = {"*"};  // glob patterns
  bool retain_keys = true;
  KeyFormat key_format = KeyFormat::json;
  LogLevel log_level = LogLevel::info;

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
