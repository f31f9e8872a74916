// The configuration table (SPEC section 2). A new variable is one row here, its Config field and
// its test; everything else (parsing, `config`, --help, agent.env, the README, the manual, the
// completion) follows from the row.
#include "config/variables.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <thread>
#include <type_traits>

#include "config/config.hpp"

#ifndef PA_DEFAULT_PLUGIN_DIR
#define PA_DEFAULT_PLUGIN_DIR "/usr/lib/provision-agent/plugins"
#endif

namespace pa {
namespace {

constexpr int kMaxWorkers = 256;
constexpr std::int64_t kDay = 86400;

// ---- Rules beyond a kind -------------------------------------------------------------------

std::optional<std::string> host_name_rule(std::string_view text) {
  const bool blank =
      std::any_of(text.begin(), text.end(), [](unsigned char c) { return std::isspace(c) != 0; });
  if (text.empty() || blank) return "expected a host name or address";
  return std::nullopt;
}

std::optional<std::string> topic_base_rule(std::string_view text) {
  if (text.empty()) return "expected a non-empty topic";
  if (text.find_first_of("+#") != std::string_view::npos)
    return "must not contain the wildcards '+' or '#'";
  if (text.front() == '/' || text.back() == '/') return "must not start or end with '/'";
  return std::nullopt;
}

std::optional<std::string> client_id_rule(std::string_view text) {
  if (text.empty() || text.size() > 128) return "expected 1..128 characters";
  if (text.find_first_of("/+#") != std::string_view::npos)
    return "must not contain '/', '+' or '#'";
  return std::nullopt;
}

std::optional<std::string> group_name_rule(std::string_view text) {
  if (text.size() > 64 || text.find_first_of(" :/\n") != std::string_view::npos)
    return "expected a group name";
  return std::nullopt;
}

std::optional<std::string> folder_rule(std::string_view text) {
  if (text.empty()) return "expected a folder";
  return std::nullopt;
}

// ---- Storing a typed value in its field ----------------------------------------------------

void store(std::string& field, const ConfigValue& value) {
  field = std::get<std::string>(value);
}
void store(std::optional<std::string>& field, const ConfigValue& value) {
  field = std::get<std::string>(value);
}
void store(int& field, const ConfigValue& value) {
  field = static_cast<int>(std::get<std::int64_t>(value));
}
void store(std::int64_t& field, const ConfigValue& value) {
  field = std::get<std::int64_t>(value);
}
void store(std::optional<std::int64_t>& field, const ConfigValue& value) {
  field = std::get<std::int64_t>(value);
}
void store(bool& field, const ConfigValue& value) {
  field = std::get<bool>(value);
}
void store(std::vector<std::string>& field, const ConfigValue& value) {
  field = std::get<std::vector<std::string>>(value);
}
template <class Enum, std::enable_if_t<std::is_enum_v<Enum>, int> = 0>
void store(Enum& field, const ConfigValue& value) {
  field = static_cast<Enum>(std::get<std::int64_t>(value));
}

template <class T>
struct IsOptional : std::false_type {};
template <class T>
struct IsOptional<std::optional<T>> : std::true_type {};

// One row, written as a sentence: Row("MQTT_KEEPALIVE", "--keepalive", integer).defaults("60")...
class Row {
 public:
  Row(const char* env, const char* flag, VariableKind kind) {
    row_.env = env;
    row_.flag = flag;
    row_.kind = kind;
  }
  Row& defaults(std::string text) {
    row_.default_value = std::move(text);
    return *this;
  }
  // A default in words; `compute` gives its value at start-up (nullptr: unset).
  Row& computed(const char* note, std::function<std::string(const Config&)> compute = {}) {
    row_.default_note = note;
    row_.compute_default = std::move(compute);
    return *this;
  }
  Row& range(std::int64_t min, std::int64_t max, const char* unit = nullptr) {
    row_.min = min;
    row_.max = max;
    row_.unit = unit;
    return *this;
  }
  template <class Table>
  Row& choices(const Table& table) {
    for (const auto& [value, name] : table)
      row_.choices.emplace_back(static_cast<std::int64_t>(value), name);
    return *this;
  }
  Row& must_be(PathCheck check) {
    row_.path_check = check;
    return *this;
  }
  Row& rule(std::optional<std::string> (*check)(std::string_view)) {
    row_.check = check;
    return *this;
  }
  Row& expected(const char* text) {
    row_.expected = text;
    return *this;
  }
  Row& help(const char* text) {
    row_.help = text;
    return *this;
  }
  Row& note(const char* text) {
    row_.note = text;
    return *this;
  }
  Row& secret() {
    row_.secret = true;
    return *this;
  }
  Row& package_sets(const char* value) {
    row_.package_value = value;
    return *this;
  }
  template <class Field>
  Row& into(Field Config::*member) {
    row_.optional = IsOptional<Field>::value;
    row_.assign = [member](Config& config, const ConfigValue& value) {
      store(config.*member, value);
    };
    return *this;
  }
  ConfigVariable in(ConfigSection section) const {
    ConfigVariable row = row_;
    row.section = section;
    return row;
  }

 private:
  ConfigVariable row_;
};

using K = VariableKind;

std::vector<ConfigVariable> make_table() {
  std::vector<ConfigVariable> rows;
  auto section = [&rows](ConfigSection section, std::initializer_list<Row> group) {
    for (const Row& row : group) rows.push_back(row.in(section));
  };

  section(
      ConfigSection::broker,
      {
          Row("MQTT_BROKER_URL", "--broker-url", K::url_list)
              .help("mqtt://host[:port] or mqtts://host[:port]; sets host, port and TLS at once")
              .note("A comma-separated list names fail-over brokers, tried in order "
                    "(mqtts://a.example.net,mqtts://b.example.net:8883); the first sets "
                    "MQTT_HOST, MQTT_PORT and MQTT_USE_TLS unless a source as strong or stronger "
                    "sets them."),
          Row("MQTT_HOST", "--mqtt-host", K::text)
              .defaults("localhost")
              .rule(host_name_rule)
              .help("broker host")
              .into(&Config::mqtt_host),
          Row("MQTT_PORT", "--mqtt-port", K::integer)
              .defaults("1883")
              .computed("1883, or 8883 with TLS",
                        [](const Config& c) { return c.mqtt_use_tls ? "8883" : "1883"; })
              .range(1, 65535)
              .help("broker port")
              .into(&Config::mqtt_port),
          Row("MQTT_USER", "--mqtt-user", K::text)
              .help("broker user name")
              .into(&Config::mqtt_user),
          Row("MQTT_PASSWORD", "--mqtt-password", K::text)
              .secret()
              .help("broker password")
              .note("As a flag it is visible to every local user in /proc/<pid>/cmdline: prefer "
                    "MQTT_PASSWORD_FILE.")
              .into(&Config::mqtt_password),
          Row("MQTT_PASSWORD_FILE", "--mqtt-password-file", K::path)
              .must_be(PathCheck::readable_file)
              .help("file holding the broker password; wins over MQTT_PASSWORD")
              .note("With systemd credentials (LoadCredential=mqtt-password:/etc/provision-agent/"
                    "mqtt-password in a drop-in) use "
                    "MQTT_PASSWORD_FILE=/run/credentials/provision-agent.service/mqtt-password."),
          Row("MQTT_USE_TLS", "--mqtt-use-tls", K::boolean)
              .defaults("false")
              .help("TLS to the broker")
              .into(&Config::mqtt_use_tls),
          Row("MQTT_CA_CERTS", "--mqtt-ca-certs", K::path)
              .computed("the system store (/etc/ssl/certs)")
              .must_be(PathCheck::readable_file)
              .help("CA bundle file")
              .into(&Config::mqtt_ca_certs),
          Row("MQTT_CERTFILE", "--mqtt-certfile", K::path)
              .must_be(PathCheck::readable_file)
              .help("client certificate file for mutual TLS")
              .note("MQTT_KEYFILE must be set with it.")
              .into(&Config::mqtt_certfile),
          Row("MQTT_KEYFILE", "--mqtt-keyfile", K::path)
              .must_be(PathCheck::readable_file)
              .help("client key file for mutual TLS")
              .note("It must be readable by the provision-agent user and not "
                    "passphrase-protected.")
              .into(&Config::mqtt_keyfile),
          Row("MQTT_TLS_INSECURE", "--mqtt-tls-insecure", K::boolean)
              .defaults("false")
              .help("skip verification of the broker certificate's host name")
              .note("Logged as a warning at start.")
              .into(&Config::mqtt_tls_insecure),
          Row("MQTT_CLIENT_ID", "--client-id", K::text)
              .computed("provision-agent- + the first 12 hex digits of /etc/machine-id (the host "
                        "name if none)",
                        [](const Config&) { return default_client_id(); })
              .rule(client_id_rule)
              .help("MQTT client id")
              .note("Stable and unique per Pi even when every Pi is called raspberrypi: the "
                    "broker's persistent session is keyed on it.")
              .into(&Config::mqtt_client_id),
          Row("MQTT_BROKER_CONFIG", "--broker-config", K::path)
              .must_be(PathCheck::readable_file)
              .help("broker settings JSON file in the provisioning-response format")
              .note("{\"mqtt\":{\"broker\",\"username\",\"password\",\"brokerConfig\":{...}}} or "
                    "the mqtt object alone; its values rank just above the defaults, and an "
                    "inline caCert PEM is used as the CA."),
          Row("MQTT_KEEPALIVE", "--keepalive", K::integer)
              .defaults("60")
              .range(5, 65535, "seconds")
              .help("keepalive")
              .into(&Config::mqtt_keepalive),
          Row("MQTT_PROTOCOL", "--mqtt-protocol", K::choice)
              .defaults("3.1.1")
              .choices(kMqttProtocolNames)
              .help("MQTT protocol version")
              .note("Brokers such as older RabbitMQ speak only 3.1.1.")
              .into(&Config::mqtt_protocol),
          Row("MQTT_SESSION_EXPIRY", "--session-expiry", K::integer)
              .defaults("604800")
              .range(0, 4294967295LL, "seconds")
              .help("MQTT 5 session expiry")
              .note("Requests the broker queues while the agent is away survive this long.")
              .into(&Config::session_expiry),
          Row("MQTT_PROVISION_TOPIC_BASE", "--provision-topic-base", K::text)
              .defaults("provision")
              .rule(topic_base_rule)
              .help("request/response topic base")
              .note("Requests on <base>/+/request, update and delete; responses on "
                    "<base>/<device>/response.")
              .into(&Config::provision_topic_base),
          Row("MQTT_KEYS_TOPIC_BASE", "--keys-topic-base", K::text)
              .defaults("keys")
              .rule(topic_base_rule)
              .help("public key topic base")
              .note("Public keys on <base>/<device>/public.")
              .into(&Config::keys_topic_base),
      });

  section(
      ConfigSection::key_store,
      {
          Row("PROVISION_KEYS_DIR", "--keys-dir", K::path)
              .computed("$PROJECT_ROOT/sensor_keys, else $STATE_DIRECTORY/sensor_keys (the "
                        "service's /var/lib/provision-agent/sensor_keys), else ./sensor_keys")
              .help("key store root")
              .note("A folder outside the state folder must be made writable with a drop-in "
                    "(ReadWritePaths=, see the README)."),
          Row("PROJECT_ROOT", "--project-root", K::path)
              .help("the original Python agent's project folder; keys in "
                    "$PROJECT_ROOT/sensor_keys")
              .into(&Config::project_root),
          Row("PROVISION_PLUGIN_DIR", "--plugin-dir", K::path)
              .computed("the installed plugin folder (/usr/lib/<multiarch>/provision-agent/"
                        "plugins in the .deb)",
                        [](const Config&) { return std::string(PA_DEFAULT_PLUGIN_DIR); })
              .rule(folder_rule)
              .help("folder the *.so handler plugins are loaded from")
              .into(&Config::plugin_dir),
          Row("PROVISION_KEY_TYPE", "--key-type", K::choice)
              .defaults("rsa-2048")
              .choices(keystore::kKeyTypeNames)
              .help("key type of new key pairs")
              .note("A request's key_type overrides it.")
              .into(&Config::key_type),
          Row("PROVISION_KEY_GROUP", "--key-group", K::text)
              .rule(group_name_rule)
              .package_sets("provision-keys")
              .help("group that may read the private keys")
              .note("With it, key folders are 0750 and private keys 0640, owned by the group; a "
                    "sensor program's user joins it (sudo usermod -aG provision-keys pi). "
                    "Unset, keys are 0600 for the agent alone. The package creates the group "
                    "provision-keys and sets it here.")
              .into(&Config::key_group),
          Row("PROVISION_MAX_DEVICES", "--max-devices", K::integer)
              .defaults("10000")
              .range(1, 10000000)
              .help("key pairs the store may hold")
              .note("A request that would add one more is answered quota_exceeded.")
              .into(&Config::max_devices),
          Row("PROVISION_CSR", "--csr", K::boolean)
              .defaults("false")
              .help("also publish a PKCS#10 certificate request for each new key")
              .into(&Config::csr),
          Row("PROVISION_CA_FILE", "--ca-file", K::path)
              .must_be(PathCheck::readable_file)
              .help("CA bundle that install_certificate checks certificates against")
              .into(&Config::ca_file),
          Row("PROVISION_KEY_MAX_AGE", "--key-max-age", K::duration)
              .range(1, 36500 * kDay)
              .help("keys older than this are due for rotation")
              .note("An integer with s, m, h or d (365d). Certificates past 80% of their "
                    "lifetime are due too; `provision-agent keys due` lists what is due.")
              .into(&Config::key_max_age_seconds),
          Row("PROVISION_KEY_POOL", "--key-pool", K::integer)
              .defaults("2")
              .range(0, 64)
              .help("key pairs of the default type kept pre-generated")
              .note("Kept in locked memory and made at idle priority; 0 turns the pool off.")
              .into(&Config::key_pool),
      });

  section(
      ConfigSection::requests,
      {
          Row("PROVISION_WORKERS", "--workers", K::integer)
              .computed("the number of CPUs",
                        [](const Config&) {
                          const unsigned cpus = std::thread::hardware_concurrency();
                          return std::to_string(std::clamp<unsigned>(cpus, 1, kMaxWorkers));
                        })
              .range(1, kMaxWorkers)
              .help("worker threads for handlers")
              .into(&Config::workers),
          Row("PROVISION_QUEUE_MAX", "--queue-max", K::integer)
              .defaults("1024")
              .range(1, 1000000)
              .help("requests waiting beyond this are answered busy")
              .into(&Config::queue_max),
          Row("PROVISION_MAX_PAYLOAD", "--max-payload", K::integer)
              .defaults("65536")
              .range(256, 16 * 1024 * 1024, "bytes")
              .help("larger payloads are answered payload_too_large")
              .into(&Config::max_payload),
          Row("PROVISION_E2EE_POLICY", "--e2ee-policy", K::choice)
              .defaults("destructive")
              .choices(kE2eePolicyNames)
              .help("which requests must be end-to-end encrypted")
              .note("destructive: update, delete and a forced generate of existing keys; all: "
                    "every request.")
              .into(&Config::e2ee_policy),
          Row("PROVISION_AGENT_KEY", "--agent-key", K::path)
              .computed("agent_private.pem in the state folder")
              .help("the agent's own private key file")
              .note("Generated on first start; $PROJECT_ROOT/keys/private.pem when that exists. "
                    "Its public half is in the agent's status, for servers that encrypt.")
              .into(&Config::agent_key),
          Row("PROVISION_SERVER_PUBKEY", "--server-pubkey", K::path)
              .must_be(PathCheck::readable_file)
              .help("the server's public key (PEM); requests must then be signed by the server")
              .into(&Config::server_pubkey),
          Row("PROVISION_MAX_SKEW", "--max-skew", K::integer)
              .defaults("300")
              .range(1, kDay, "seconds")
              .help("replay window for requests that carry ts or timestamp")
              .into(&Config::max_skew),
          Row("PROVISION_DEVICES", "--devices", K::list)
              .defaults("*")
              .expected("expected comma-separated device id patterns (pH*,ec01)")
              .help("comma-separated glob patterns of device ids this agent serves")
              .note("Requests for other devices are ignored silently.")
              .into(&Config::devices),
          Row("PROVISION_RETAIN_KEYS", "--retain-keys", K::boolean)
              .defaults("true")
              .help("publish public keys retained")
              .into(&Config::retain_keys),
          Row("PROVISION_KEY_FORMAT", "--key-format", K::choice)
              .defaults("json")
              .choices(kKeyFormatNames)
              .help("published public key format")
              .note("pem: the raw PEM text, as the original Python agent sent it.")
              .into(&Config::key_format),
      });

  section(
      ConfigSection::logging,
      {
          Row("PROVISION_METRICS_FILE", "--metrics-file", K::path)
              .must_be(PathCheck::folder_exists)
              .help("Prometheus text file, rewritten atomically")
              .note("For node-exporter's textfile collector: "
                    "/var/lib/prometheus/node-exporter/provision_agent.prom.")
              .into(&Config::metrics_file),
          Row("LOG_LEVEL", "--log-level", K::choice)
              .defaults("info")
              .choices(kLogLevelNames)
              .help("least important log entries written")
              .note("Entries go to the journal with DEVICE_ID, USER_ID, ACTION, REQUEST_ID, "
                    "OUTCOME and ERROR_CODE fields: journalctl -u provision-agent DEVICE_ID=pH01")
              .into(&Config::log_level),
      });
  return rows;
}

}  // namespace

std::string_view to_string(VariableKind kind) noexcept {
  return enum_name(kVariableKindNames, kind, "text");
}

std::string_view to_string(ConfigSection section) noexcept {
  return enum_name(kConfigSectionNames, section, "Broker");
}

std::string join_alternatives(const std::vector<std::string_view>& words) {
  std::string text;
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i > 0) text += i + 1 == words.size() ? " or " : ", ";
    text += words[i];
  }
  return text;
}

std::vector<std::string_view> ConfigVariable::choice_names() const {
  return shown_enum_names(choices);
}

std::string ConfigVariable::default_text() const {
  if (default_note) return default_note;
  return default_value.empty() ? "unset" : default_value;
}

std::string ConfigVariable::range_text() const {
  switch (kind) {
    case VariableKind::integer:
      return fmt::format("{}..{}{}{}", min, max, unit ? " " : "", unit ? unit : "");
    case VariableKind::choice:
      return join_alternatives(choice_names());
    case VariableKind::duration:
      return fmt::format("{}s..{}d", min, max / kDay);
    default:
      return {};
  }
}

std::string ConfigVariable::expectation() const {
  if (expected) return expected;
  switch (kind) {
    case VariableKind::integer:
      return fmt::format("expected an integer {}..{}{}{}{}", min, max, unit ? " (" : "",
                         unit ? unit : "", unit ? ")" : "");
    case VariableKind::boolean:
      return "expected true/false, 1/0, yes/no or on/off";
    case VariableKind::choice:
      return "expected " + join_alternatives(choice_names());
    case VariableKind::duration:
      return fmt::format("expected a duration {}: an integer with s, m, h or d (365d)",
                         range_text());
    case VariableKind::url_list:
      return "expected mqtt://host[:port] or mqtts://host[:port]";
    case VariableKind::list:
      return "expected comma-separated items";
    case VariableKind::path:
      return "expected a path";
    case VariableKind::text:
      return "expected text";
  }
  return "expected text";
}

const std::vector<ConfigVariable>& config_variables() {
  static const std::vector<ConfigVariable> rows = make_table();
  return rows;
}

const ConfigVariable* find_config_variable(std::string_view env) {
  for (const ConfigVariable& row : config_variables())
    if (env == row.env) return &row;
  return nullptr;
}

}  // namespace pa
