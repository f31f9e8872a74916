// Configuration (SPEC section 2): raw values from flags, environment, env file and broker-config
// JSON, resolved by precedence, then typed and validated. Every problem is one ConfigError line.
#include "config/config.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/os.h>
#include <fnmatch.h>
#include <pwd.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>
#include <unistd.h>

extern char** environ;

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string_view>
#include <system_error>
#include <thread>

#include "base/log.hpp"
#include "base/text.hpp"
#include "keystore/rotation.hpp"
#include "config/env_file.hpp"

#ifndef PA_DEFAULT_PLUGIN_DIR
#define PA_DEFAULT_PLUGIN_DIR "/usr/lib/provision-agent/plugins"
#endif

namespace pa {
namespace {

namespace fs = std::filesystem;
using Entries = std::map<std::string, Config::Entry>;

constexpr const char* kMask = "********";
constexpr std::size_t kMaxFileSize = 1 << 20;  // password and broker-config files are small
constexpr int kMaxPayloadLimit = 16 * 1024 * 1024;
constexpr int kMaxWorkers = 256;

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool is_space(char c) {
  return std::isspace(static_cast<unsigned char>(c)) != 0;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && is_space(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
  return text;
}

// The one-line error of SPEC section 2: `invalid NAME="value": why`.
[[noreturn]] void fail(std::string_view name, std::string_view value, std::string_view why) {
  throw ConfigError(fmt::format("invalid {}={}: {}", name, quoted(value), why));
}

// Reads a whole file (up to kMaxFileSize) or, for a readability check, its first byte; the
// error names the variable and the path.
std::string read_file_for(std::string_view name, const std::string& path, bool whole) {
  std::string content;
  try {
    fmt::file file(path.c_str(), fmt::file::RDONLY | O_CLOEXEC);
    char buffer[4096];
    for (;;) {
      const std::size_t count = file.read(buffer, whole ? sizeof buffer : 1);
      if (count == 0) break;
      content.append(buffer, count);
      if (!whole) break;
      if (content.size() > kMaxFileSize) fail(name, path, "file is larger than 1 MiB");
    }
  } catch (const std::system_error& error) {
    fail(name, path, fmt::format("cannot read file: {}", error.code().message()));
  }
  return content;
}

std::string read_small_file(std::string_view name, const std::string& path) {
  return read_file_for(name, path, true);
}

void require_readable(std::string_view name, const std::string& path) {
  read_file_for(name, path, false);
}

const ConfigVariable* find_variable(std::string_view name) {
  for (const auto& variable : config_variables()) {
    if (name == variable.env) return &variable;
  }
  return nullptr;
}

int rank(ConfigSource source) {
  return static_cast<int>(source);
}

// The raw value when the variable was given; otherwise records `default_text` as its shown
// default and returns nullptr.
const std::string* given(Entries& entries, const std::string& name,
                         std::string_view default_text = {}) {
  Config::Entry& entry = entries[name];
  if (entry.set) return &entry.value;
  entry.value = std::string(default_text);
  return nullptr;
}

// A given, non-empty value; an empty value means "unset" for optional strings and paths.
std::optional<std::string> read_optional(Entries& entries, const std::string& name) {
  const std::string* value = given(entries, name);
  if (value == nullptr || value->empty()) return std::nullopt;
  return *value;
}

int parse_int(std::string_view name, const std::string& value, int min, int max) {
  long long number = 0;
  const char* end = value.data() + value.size();
  const auto [ptr, ec] = std::from_chars(value.data(), end, number);
  if (value.empty() || ec != std::errc() || ptr != end || number < min || number > max) {
    fail(name, value, fmt::format("expected an integer {}..{}", min, max));
  }
  return static_cast<int>(number);
}

int read_int(Entries& entries, const std::string& name, int fallback, int min, int max) {
  const std::string* value = given(entries, name, std::to_string(fallback));
  return value == nullptr ? fallback : parse_int(name, *value, min, max);
}

bool parse_bool(std::string_view name, const std::string& value) {
  if (const auto parsed = parse_boolean(value)) return *parsed;
  fail(name, value, "expected true/false, 1/0, yes/no or on/off");
}

bool read_bool(Entries& entries, const std::string& name, bool fallback) {
  const std::string* value = given(entries, name, fallback ? "true" : "false");
  return value == nullptr ? fallback : parse_bool(name, *value);
}

void check_topic_base(std::string_view name, const std::string& value) {
  if (value.empty()) fail(name, value, "expected a non-empty topic");
  if (value.find_first_of("+#") != std::string::npos) {
    fail(name, value, "must not contain the wildcards '+' or '#'");
  }
  if (value.front() == '/' || value.back() == '/') {
    fail(name, value, "must not start or end with '/'");
  }
}

void check_client_id(const std::string& value) {
  constexpr const char* kName = "MQTT_CLIENT_ID";
  if (value.empty() || value.size() > 128) fail(kName, value, "expected 1..128 characters");
  if (value.find_first_of("/+#") != std::string::npos) {
    fail(kName, value, "must not contain '/', '+' or '#'");
  }
}

// First 12 hex digits of the machine id, lower-cased; nullopt when missing, empty or not hex.
std::optional<std::string> machine_id_digits(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return std::nullopt;
  const std::string_view id = trim(line);
  if (id.size() < 12) return std::nullopt;
  const bool hex =
      std::all_of(id.begin(), id.end(), [](unsigned char c) { return std::isxdigit(c) != 0; });
  if (!hex) return std::nullopt;
  return lower(id.substr(0, 12));
}

std::string host_name() {
  char name[256] = {};
  if (gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

// What makes a client id unique per Pi: the machine id, else the host name.
std::string machine_suffix(const std::string& machine_id_path) {
  return machine_id_digits(machine_id_path).value_or(host_name());
}

struct BrokerUrl {
  std::string host;
  std::optional<int> port;
  bool tls = false;
};

BrokerUrl parse_broker_url(const std::string& url) {
  constexpr const char* kName = "MQTT_BROKER_URL";
  constexpr const char* kExpected = "expected mqtt://host[:port] or mqtts://host[:port]";
  BrokerUrl result;
  const std::size_t separator = url.find("://");
  if (separator == std::string::npos) fail(kName, url, kExpected);
  const std::string scheme = lower(url.substr(0, separator));
  if (scheme == "mqtts") {
    result.tls = true;
  } else if (scheme != "mqtt") {
    fail(kName, url, fmt::format("unsupported scheme \"{}\"; {}", escape_controls(scheme), kExpected));
  }
  std::string_view rest = std::string_view(url).substr(separator + 3);
  if (const std::size_t at = rest.find('@'); at != std::string_view::npos) {
    // Never echo credentials: they belong in MQTT_USER / MQTT_PASSWORD.
    fail(kName, fmt::format("{}://****@{}", scheme, rest.substr(at + 1)),
         "credentials in the URL are not supported; use MQTT_USER and MQTT_PASSWORD");
  }
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find_first_of("/?#") != std::string_view::npos) fail(kName, url, kExpected);

  std::string_view port_text;
  bool has_port = false;
  if (!rest.empty() && rest.front() == '[') {  // IPv6 literal: [::1]:1883
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) fail(kName, url, kExpected);
    result.host = std::string(rest.substr(1, close - 1));
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') fail(kName, url, kExpected);
      has_port = true;
      port_text = after.substr(1);
    }
  } else {
    const std::size_t colon = rest.find(':');
    result.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) {
      has_port = true;
      port_text = rest.substr(colon + 1);
    }
  }
  if (result.host.empty()) fail(kName, url, fmt::format("missing host; {}", kExpected));
  if (has_port) {
    int port = 0;
    const char* end = port_text.data() + port_text.size();
    const auto [ptr, ec] = std::from_chars(port_text.data(), end, port);
    if (port_text.empty() || ec != std::errc() || ptr != end || port < 1 || port > 65535) {
      fail(kName, url, "expected a port 1..65535");
    }
    result.port = port;
  }
  return result;
}

// The values an MQTT_BROKER_CONFIG file contributes, by variable name.
struct BrokerConfigFile {
  std::map<std::string, std::string> values;
  std::optional<std::string> ca_pem;
};

BrokerConfigFile parse_broker_config(const std::string& path) {
  constexpr const char* kName = "MQTT_BROKER_CONFIG";
  const std::string text = read_small_file(kName, path);
  auto bad = [&](const std::string& why) { fail(kName, path, why); };

  rapidjson::Document document;
  document.Parse(text.data(), text.size());
  if (document.HasParseError()) {
    bad(fmt::format("malformed JSON at offset {}: {}", document.GetErrorOffset(),
                    rapidjson::GetParseError_En(document.GetParseError())));
  }
  if (!document.IsObject()) bad("expected a JSON object");

  // Absent and null both mean "not given".
  auto member = [](const rapidjson::Value& object, const char* key) -> const rapidjson::Value* {
    const auto it = object.FindMember(key);
    if (it == object.MemberEnd() || it->value.IsNull()) return nullptr;
    return &it->value;
  };
  auto string_at = [&](const rapidjson::Value& object, const char* key,
                       const char* where) -> std::optional<std::string> {
    const rapidjson::Value* value = member(object, key);
    if (value == nullptr) return std::nullopt;
    if (!value->IsString()) bad(fmt::format("\"{}\" must be a string", where));
    return std::string(value->GetString(), value->GetStringLength());
  };
  auto bool_at = [&](const rapidjson::Value& object, const char* key,
                     const char* where) -> std::optional<bool> {
    const rapidjson::Value* value = member(object, key);
    if (value == nullptr) return std::nullopt;
    if (!value->IsBool()) bad(fmt::format("\"{}\" must be true or false", where));
    return value->GetBool();
  };
  auto int_at = [&](const rapidjson::Value& object, const char* key,
                    const char* where) -> std::optional<std::string> {
    const rapidjson::Value* value = member(object, key);
    if (value == nullptr) return std::nullopt;
    if (!value->IsInt64()) bad(fmt::format("\"{}\" must be an integer", where));
    return std::to_string(value->GetInt64());
  };

  const rapidjson::Value* mqtt = &document;
  if (const auto it = document.FindMember("mqtt"); it != document.MemberEnd()) {
    if (!it->value.IsObject()) bad("\"mqtt\" must be an object");
    mqtt = &it->value;
  }

  BrokerConfigFile result;
  auto put = [&](const char* name, const std::optional<std::string>& value) {
    if (value) result.values[name] = *value;
  };
  put("MQTT_BROKER_URL", string_at(*mqtt, "broker", "broker"));
  put("MQTT_USER", string_at(*mqtt, "username", "username"));
  put("MQTT_PASSWORD", string_at(*mqtt, "password", "password"));

  const rapidjson::Value* broker = member(*mqtt, "brokerConfig");
  if (broker == nullptr) return result;
  if (!broker->IsObject()) bad("\"brokerConfig\" must be an object");

  if (const auto protocol = string_at(*broker, "protocol", "brokerConfig.protocol")) {
    const std::string scheme = lower(*protocol);
    if (scheme != "mqtt" && scheme != "mqtts") {
      bad(fmt::format("\"brokerConfig.protocol\" is \"{}\"; expected \"mqtt\" or \"mqtts\"",
                      escape_controls(*protocol)));
    }
    if (scheme == "mqtts") result.values["MQTT_USE_TLS"] = "true";
  }
  if (const auto use_tls = bool_at(*broker, "useTls", "brokerConfig.useTls")) {
    result.values["MQTT_USE_TLS"] = *use_tls ? "true" : "false";
  }
  put("MQTT_HOST", string_at(*broker, "host", "brokerConfig.host"));
  put("MQTT_PORT", int_at(*broker, "port", "brokerConfig.port"));
  if (const auto verify = bool_at(*broker, "verifyCertificate", "brokerConfig.verifyCertificate")) {
    result.values["MQTT_TLS_INSECURE"] = *verify ? "false" : "true";
  }
  put("MQTT_KEEPALIVE", int_at(*broker, "keepAlive", "brokerConfig.keepAlive"));
  if (const auto prefix = string_at(*broker, "clientIdPrefix", "brokerConfig.clientIdPrefix");
      prefix && !prefix->empty()) {
    result.values["MQTT_CLIENT_ID"] = *prefix + "-" + machine_suffix("/etc/machine-id");
  }
  if (const auto ca = string_at(*broker, "caCert", "brokerConfig.caCert"); ca && !ca->empty()) {
    if (ca->find("-----BEGIN") == std::string::npos) {
      bad("\"brokerConfig.caCert\" must be PEM text (-----BEGIN CERTIFICATE-----)");
    }
    result.ca_pem = *ca;
  }
  // cleanSession, reconnectPeriod, connectTimeout and clientCert are accepted and ignored: the
  // session is always persistent (SPEC section 3) and reconnects follow the agent's own policy.
  return result;
}

fs::path make_absolute(std::string_view name, const fs::path& path) {
  if (path.is_absolute()) return path.lexically_normal();
  std::error_code error;
  const fs::path absolute = fs::absolute(path, error);
  if (error) fail(name, path.string(), fmt::format("cannot make it absolute: {}", error.message()));
  return absolute.lexically_normal();
}

}  // namespace

const char* to_string(ConfigSource source) noexcept {
  switch (source) {
    case ConfigSource::default_value:
      return "default";
    case ConfigSource::broker_config:
      return "broker-config";
    case ConfigSource::env_file:
      return "env-file";
    case ConfigSource::environment:
      return "environment";
    case ConfigSource::flag:
      return "flag";
  }
  return "unknown";
}

const std::vector<ConfigVariable>& config_variables() {
  static const std::vector<ConfigVariable> variables = {
      {"MQTT_BROKER_URL", "--broker-url",
       "mqtt://host[:port] or mqtts://host[:port]; sets host, port and TLS (default unset)"},
      {"MQTT_HOST", "--mqtt-host", "broker host (default localhost)"},
      {"MQTT_PORT", "--mqtt-port", "broker port (default 1883, or 8883 with TLS)"},
      {"MQTT_USER", "--mqtt-user", "broker user name (default unset)"},
      {"MQTT_PASSWORD", "--mqtt-password", "broker password (default unset)", true},
      {"MQTT_PASSWORD_FILE", "--mqtt-password-file",
       "file holding the broker password; wins over MQTT_PASSWORD (default unset)"},
      {"MQTT_USE_TLS", "--mqtt-use-tls", "TLS to the broker (default false)"},
      {"MQTT_CA_CERTS", "--mqtt-ca-certs", "CA bundle file (default the system store)"},
      {"MQTT_CERTFILE", "--mqtt-certfile",
       "client certificate file for mutual TLS (default unset)"},
      {"MQTT_KEYFILE", "--mqtt-keyfile", "client key file for mutual TLS (default unset)"},
      {"MQTT_TLS_INSECURE", "--mqtt-tls-insecure",
       "skip verification of the broker certificate's host name (default false)"},
      {"MQTT_CLIENT_ID", "--client-id",
       "MQTT client id (default provision-agent- + 12 hex digits of /etc/machine-id)"},
      {"MQTT_BROKER_CONFIG", "--broker-config",
       "broker settings JSON file in the provisioning-response format (default unset)"},
      {"MQTT_KEEPALIVE", "--keepalive", "keepalive in seconds, 5..65535 (default 60)"},
      {"MQTT_PROTOCOL", "--mqtt-protocol", "MQTT protocol version, 3.1.1 or 5 (default 3.1.1)"},
      {"MQTT_SESSION_EXPIRY", "--session-expiry",
       "MQTT 5 session expiry in seconds: requests queued by the broker while the agent is away "
       "survive this long, 0..4294967295 (default 604800)"},
      {"MQTT_PROVISION_TOPIC_BASE", "--provision-topic-base",
       "request/response topic base (default provision)"},
      {"MQTT_KEYS_TOPIC_BASE", "--keys-topic-base", "public key topic base (default keys)"},
      {"PROVISION_KEYS_DIR", "--keys-dir",
       "key store root (default $PROJECT_ROOT/sensor_keys, $STATE_DIRECTORY/sensor_keys or "
       "./sensor_keys)"},
      {"PROJECT_ROOT", "--project-root",
       "project folder whose sensor_keys folder is the key store (default unset)"},
      {"PROVISION_PLUGIN_DIR", "--plugin-dir",
       "folder of handler plugins (default " PA_DEFAULT_PLUGIN_DIR ")"},
      {"PROVISION_KEY_TYPE", "--key-type",
       "rsa-2048, rsa-3072, rsa-4096, ec-p256 or ed25519 (default rsa-2048)"},
      {"PROVISION_WORKERS", "--workers",
       "worker threads for handlers, 1..256 (default the number of CPUs)"},
      {"PROVISION_QUEUE_MAX", "--queue-max",
       "requests waiting beyond this are answered busy (default 1024)"},
      {"PROVISION_MAX_PAYLOAD", "--max-payload",
       "larger payloads in bytes are answered payload_too_large (default 65536)"},
      {"PROVISION_E2EE_POLICY", "--e2ee-policy",
       "requests that must be encrypted: off, destructive or all (default destructive)"},
      {"PROVISION_AGENT_KEY", "--agent-key",
       "the agent's private key file (default agent_private.pem in the state folder)"},
      {"PROVISION_SERVER_PUBKEY", "--server-pubkey",
       "server public key file; requests must then be signed (default unset)"},
      {"PROVISION_MAX_SKEW", "--max-skew",
       "replay window in seconds for requests with ts, 1..86400 (default 300)"},
      {"PROVISION_DEVICES", "--devices",
       "comma-separated glob patterns of device ids served (default *)"},
      {"PROVISION_RETAIN_KEYS", "--retain-keys", "publish public keys retained (default true)"},
      {"PROVISION_KEY_FORMAT", "--key-format",
       "published public key format: json or pem (default json)"},
      {"PROVISION_KEY_GROUP", "--key-group",
       "group that may read the private keys: folders 0750, private keys 0640 (default unset)"},
      {"PROVISION_CSR", "--csr",
       "also publish a PKCS#10 certificate request made with each key (default false)"},
      {"PROVISION_CA_FILE", "--ca-file",
       "CA bundle that install_certificate checks certificates against (default unset)"},
      {"PROVISION_KEY_MAX_AGE", "--key-max-age",
       "keys older than this (an integer with s, m, h or d, e.g. 365d) are due for rotation "
       "(default unset)"},
      {"PROVISION_MAX_DEVICES", "--max-devices",
       "key pairs the store may hold; one more is answered quota_exceeded, 1..10000000 (default "
       "10000)"},
      {"LOG_LEVEL", "--log-level", "debug, info, warning or error (default info)"},
  };
  return variables;
}

std::optional<bool> parse_boolean(std::string_view text) {
  const std::string word = lower(text);
  if (word == "true" || word == "1" || word == "yes" || word == "on") return true;
  if (word == "false" || word == "0" || word == "no" || word == "off") return false;
  return std::nullopt;
}

bool is_plugin_variable(std::string_view name) {
  return name.size() > kPluginVariablePrefix.size() &&
         name.substr(0, kPluginVariablePrefix.size()) == kPluginVariablePrefix;
}

std::map<std::string, std::string> environment_variables() {
  std::map<std::string, std::string> values;
  for (const auto& variable : config_variables()) {
    if (const char* value = std::getenv(variable.env)) values[variable.env] = value;
  }
  // Plugin options (SPEC section 6) are read from the environment like the agent's own.
  for (char** entry = environ; entry && *entry; ++entry) {
    const std::string_view text = *entry;
    const std::size_t equals = text.find('=');
    if (equals != std::string_view::npos && is_plugin_variable(text.substr(0, equals)))
      values[std::string(text.substr(0, equals))] = std::string(text.substr(equals + 1));
  }
  return values;
}

std::chrono::steady_clock::duration test_override_seconds(const char* variable,
                                                          std::chrono::seconds standard) {
  const char* text = std::getenv(variable);
  if (text == nullptr) return standard;
  char* end = nullptr;
  const double seconds = std::strtod(text, &end);
  if (end == text || *end != '\0' || !(seconds > 0) || seconds > 3600) return standard;
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(seconds));
}

std::map<std::string, std::string> parse_env_file(const std::string& path) {
  const std::string text = read_small_file("--env-file", path);
  EnvFileContents contents;
  try {
    contents = parse_env_text(text);
  } catch (const EnvFileError& error) {
    throw ConfigError(
        fmt::format("invalid env file {} {}; systemd's EnvironmentFile= refuses "
                    "such a file whole",
                    path, error.what()));
  }
  for (const EnvFileWarning& warning : contents.warnings) {
    log_warning("env file {} line {}: {}", path, warning.line, warning.message);
  }
  std::map<std::string, std::string> values;
  for (EnvAssignment& assignment : contents.assignments) {
    values[assignment.name] = std::move(assignment.value);
  }
  return values;
}

bool Config::serves_device(const std::string& device) const {
  return std::any_of(devices.begin(), devices.end(), [&](const std::string& pattern) {
    return fnmatch(pattern.c_str(), device.c_str(), 0) == 0;
  });
}

std::string default_state_dir() {
  // StateDirectory= with several folders gives a colon-separated list; the first is ours.
  auto absolute = [](const char* name, const std::string& path) {
    return make_absolute(name, path).string();
  };
  if (const char* state = std::getenv("STATE_DIRECTORY"); state != nullptr && *state != '\0') {
    const std::string list = state;
    return absolute("STATE_DIRECTORY", list.substr(0, list.find(':')));
  }
  // XDG base directories: a relative XDG_STATE_HOME is invalid and ignored.
  if (const char* xdg = std::getenv("XDG_STATE_HOME"); xdg != nullptr && xdg[0] == '/')
    return (fs::path(xdg) / "provision-agent").lexically_normal().string();
  std::string home = std::getenv("HOME") != nullptr ? std::getenv("HOME") : "";
  if (home.empty() || home[0] != '/') {
    // No usable $HOME (a bare service environment): the account's home, as login would set it.
    std::vector<char> buffer(16384);
    struct passwd entry {};
    struct passwd* found = nullptr;
    if (getpwuid_r(geteuid(), &entry, buffer.data(), buffer.size(), &found) == 0 && found &&
        found->pw_dir && found->pw_dir[0] == '/')
      home = found->pw_dir;
  }
  if (home.empty() || home[0] != '/')
    fail("HOME", home,
         "no state folder: set STATE_DIRECTORY or XDG_STATE_HOME (or HOME) to an absolute path");
  return (fs::path(home) / ".local/state/provision-agent").lexically_normal().string();
}

std::string default_client_id(const std::string& machine_id_path) {
  return "provision-agent-" + machine_suffix(machine_id_path);
}

Config load_config(const ConfigInputs& inputs) {
  Config config;
  Entries& entries = config.entries;
  for (const auto& variable : config_variables()) entries[variable.env] = Config::Entry{};

  // Weakest first, so a stronger source overwrites; names that aren't variables are ignored
  // (an env file may hold other services' settings).
  auto apply = [&](const std::map<std::string, std::string>& layer, ConfigSource source) {
    for (const auto& [name, value] : layer) {
      if (find_variable(name) != nullptr)
        entries[name] = Config::Entry{value, source, true};
      else if (is_plugin_variable(name))
        config.plugin_entries[name] = Config::Entry{value, source, true};
    }
  };
  if (inputs.env_file) apply(parse_env_file(*inputs.env_file), ConfigSource::env_file);
  apply(inputs.environment, ConfigSource::environment);
  apply(inputs.flags, ConfigSource::flag);

  // The broker-config JSON ranks just above the defaults: it only fills what nothing else set.
  if (const auto path = read_optional(entries, "MQTT_BROKER_CONFIG")) {
    BrokerConfigFile file = parse_broker_config(*path);
    for (const auto& [name, value] : file.values) {
      Config::Entry& entry = entries[name];
      if (!entry.set) entry = Config::Entry{value, ConfigSource::broker_config, true};
    }
    config.inline_ca_pem = std::move(file.ca_pem);
  }

  // MQTT_BROKER_URL expands at its own rank; explicit host/port/TLS of equal or higher rank win.
  if (const Config::Entry url = entries["MQTT_BROKER_URL"]; url.set && !url.value.empty()) {
    const BrokerUrl parsed = parse_broker_url(url.value);
    auto weaker = [&](const char* name) {
      const Config::Entry& entry = entries[name];
      return !entry.set || rank(entry.source) < rank(url.source);
    };
    if (weaker("MQTT_HOST")) entries["MQTT_HOST"] = {parsed.host, url.source, true};
    if (weaker("MQTT_USE_TLS")) {
      entries["MQTT_USE_TLS"] = {parsed.tls ? "true" : "false", url.source, true};
    }
    if (weaker("MQTT_PORT")) {
      // Without a port the URL means the scheme's default, so a weaker port is dropped too.
      entries["MQTT_PORT"] = parsed.port
                                 ? Config::Entry{std::to_string(*parsed.port), url.source, true}
                                 : Config::Entry{};
    }
  }

  // MQTT connection.
  if (const std::string* host = given(entries, "MQTT_HOST", config.mqtt_host)) {
    if (host->empty() || std::any_of(host->begin(), host->end(), is_space)) {
      fail("MQTT_HOST", *host, "expected a host name or address");
    }
    config.mqtt_host = *host;
  }
  config.mqtt_use_tls = read_bool(entries, "MQTT_USE_TLS", false);
  config.mqtt_port = read_int(entries, "MQTT_PORT", config.mqtt_use_tls ? 8883 : 1883, 1, 65535);
  config.mqtt_user = read_optional(entries, "MQTT_USER");
  config.mqtt_password = read_optional(entries, "MQTT_PASSWORD");
  if (const auto path = read_optional(entries, "MQTT_PASSWORD_FILE")) {
    std::string password = read_small_file("MQTT_PASSWORD_FILE", *path);
    while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) {
      password.pop_back();
    }
    config.mqtt_password = std::move(password);
  }
  if (config.mqtt_password && !config.mqtt_user) {
    const bool from_file = entries["MQTT_PASSWORD_FILE"].set;
    fail("MQTT_USER", "",
         fmt::format("must be set when {} is", from_file ? "MQTT_PASSWORD_FILE" : "MQTT_PASSWORD"));
  }

  config.mqtt_ca_certs = read_optional(entries, "MQTT_CA_CERTS");
  config.mqtt_certfile = read_optional(entries, "MQTT_CERTFILE");
  config.mqtt_keyfile = read_optional(entries, "MQTT_KEYFILE");
  for (const auto& [name, path] : {std::pair{"MQTT_CA_CERTS", &config.mqtt_ca_certs},
                                   std::pair{"MQTT_CERTFILE", &config.mqtt_certfile},
                                   std::pair{"MQTT_KEYFILE", &config.mqtt_keyfile}}) {
    if (*path) require_readable(name, **path);
  }
  if (config.mqtt_certfile && !config.mqtt_keyfile) {
    fail("MQTT_CERTFILE", *config.mqtt_certfile, "MQTT_KEYFILE must be set too (mutual TLS)");
  }
  if (config.mqtt_keyfile && !config.mqtt_certfile) {
    fail("MQTT_KEYFILE", *config.mqtt_keyfile, "MQTT_CERTFILE must be set too (mutual TLS)");
  }
  if (config.mqtt_ca_certs) config.inline_ca_pem.reset();  // an explicit CA file wins
  config.mqtt_tls_insecure = read_bool(entries, "MQTT_TLS_INSECURE", false);

  if (const std::string* id = given(entries, "MQTT_CLIENT_ID")) {
    config.mqtt_client_id = *id;
  } else {
    config.mqtt_client_id = default_client_id();
    entries["MQTT_CLIENT_ID"].value = config.mqtt_client_id;
  }
  check_client_id(config.mqtt_client_id);

  config.mqtt_keepalive = read_int(entries, "MQTT_KEEPALIVE", config.mqtt_keepalive, 5, 65535);
  if (const std::string* protocol = given(entries, "MQTT_PROTOCOL", "3.1.1")) {
    const std::string word = lower(*protocol);
    if (word == "3.1.1" || word == "311" || word == "mqttv311" || word == "v311") {
      config.mqtt_protocol = MqttProtocol::v311;
    } else if (word == "5" || word == "v5" || word == "mqttv5" || word == "5.0") {
      config.mqtt_protocol = MqttProtocol::v5;
    } else {
      fail("MQTT_PROTOCOL", *protocol, "expected 3.1.1 or 5");
    }
  }
  if (const std::string* expiry = given(entries, "MQTT_SESSION_EXPIRY", "604800")) {
    std::int64_t seconds = -1;
    const char* end = expiry->data() + expiry->size();
    const auto [ptr, ec] = std::from_chars(expiry->data(), end, seconds);
    if (expiry->empty() || ec != std::errc() || ptr != end || seconds < 0 || seconds > 4294967295LL)
      fail("MQTT_SESSION_EXPIRY", *expiry, "expected an integer 0..4294967295 (seconds)");
    config.session_expiry = seconds;
  }
  for (const auto& [name, base] :
       {std::pair{"MQTT_PROVISION_TOPIC_BASE", &config.provision_topic_base},
        std::pair{"MQTT_KEYS_TOPIC_BASE", &config.keys_topic_base}}) {
    if (const std::string* value = given(entries, name, *base)) {
      check_topic_base(name, *value);
      *base = *value;
    }
  }

  // Key store root: PROVISION_KEYS_DIR, $PROJECT_ROOT/sensor_keys, $STATE_DIRECTORY/sensor_keys
  // (systemd), ./sensor_keys; the entry shows the resolved folder and who decided it.
  config.project_root = read_optional(entries, "PROJECT_ROOT");
  Config::Entry& keys_entry = entries["PROVISION_KEYS_DIR"];
  if (keys_entry.set && !keys_entry.value.empty()) {
    config.keys_dir = make_absolute("PROVISION_KEYS_DIR", keys_entry.value).string();
    keys_entry.value = config.keys_dir;
  } else {
    const char* state = std::getenv("STATE_DIRECTORY");
    // StateDirectory= with several folders gives a colon-separated list; the first is ours.
    std::string state_dir = state != nullptr ? state : "";
    state_dir = state_dir.substr(0, state_dir.find(':'));
    if (config.project_root) {
      config.keys_dir =
          make_absolute("PROJECT_ROOT", fs::path(*config.project_root) / "sensor_keys").string();
      keys_entry.source = entries["PROJECT_ROOT"].source;
    } else if (!state_dir.empty()) {
      config.keys_dir =
          make_absolute("STATE_DIRECTORY", fs::path(state_dir) / "sensor_keys").string();
      keys_entry.source = ConfigSource::environment;
    } else {
      config.keys_dir = make_absolute("PROVISION_KEYS_DIR", "sensor_keys").string();
      keys_entry.source = ConfigSource::default_value;
    }
    keys_entry.value = config.keys_dir;
    keys_entry.set = false;
  }
  config.state_dir = default_state_dir();
  config.plugin_dir = PA_DEFAULT_PLUGIN_DIR;
  if (const std::string* dir = given(entries, "PROVISION_PLUGIN_DIR", config.plugin_dir)) {
    if (dir->empty()) fail("PROVISION_PLUGIN_DIR", *dir, "expected a folder");
    config.plugin_dir = *dir;
  }
  if (const std::string* type =
          given(entries, "PROVISION_KEY_TYPE", keystore::to_string(config.key_type))) {
    const auto parsed = keystore::parse_key_type(lower(*type));
    if (!parsed) {
      fail("PROVISION_KEY_TYPE", *type,
           "expected rsa-2048, rsa-3072, rsa-4096, ec-p256 or ed25519");
    }
    config.key_type = *parsed;
  }

  // Requests.
  const int cpus =
      static_cast<int>(std::min(std::thread::hardware_concurrency(), unsigned{kMaxWorkers}));
  config.workers = read_int(entries, "PROVISION_WORKERS", std::max(cpus, 1), 1, kMaxWorkers);
  config.queue_max = read_int(entries, "PROVISION_QUEUE_MAX", config.queue_max, 1, 1000000);
  config.max_payload =
      read_int(entries, "PROVISION_MAX_PAYLOAD", config.max_payload, 256, kMaxPayloadLimit);
  if (const std::string* policy = given(entries, "PROVISION_E2EE_POLICY", "destructive")) {
    const std::string word = lower(*policy);
    if (word == "off") {
      config.e2ee_policy = E2eePolicy::off;
    } else if (word == "destructive") {
      config.e2ee_policy = E2eePolicy::destructive;
    } else if (word == "all") {
      config.e2ee_policy = E2eePolicy::all;
    } else {
      fail("PROVISION_E2EE_POLICY", *policy, "expected off, destructive or all");
    }
  }
  config.agent_key = read_optional(entries, "PROVISION_AGENT_KEY");
  config.server_pubkey = read_optional(entries, "PROVISION_SERVER_PUBKEY");
  if (config.server_pubkey) require_readable("PROVISION_SERVER_PUBKEY", *config.server_pubkey);
  config.max_skew = read_int(entries, "PROVISION_MAX_SKEW", config.max_skew, 1, 86400);

  if (const std::string* devices = given(entries, "PROVISION_DEVICES", "*")) {
    config.devices.clear();
    std::string_view rest = *devices;
    while (true) {
      const std::size_t comma = rest.find(',');
      const std::string_view pattern = trim(rest.substr(0, comma));
      if (!pattern.empty()) config.devices.emplace_back(pattern);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    if (config.devices.empty()) {
      fail("PROVISION_DEVICES", *devices, "expected comma-separated device id patterns (pH*,ec01)");
    }
  }
  config.retain_keys = read_bool(entries, "PROVISION_RETAIN_KEYS", config.retain_keys);
  if (const auto group = read_optional(entries, "PROVISION_KEY_GROUP")) {
    if (group->size() > 64 || group->find_first_of(" :/\n") != std::string::npos)
      fail("PROVISION_KEY_GROUP", *group, "expected a group name");
    config.key_group = *group;
  }
  config.max_devices = read_int(entries, "PROVISION_MAX_DEVICES", config.max_devices, 1, 10000000);
  config.csr = read_bool(entries, "PROVISION_CSR", config.csr);
  config.ca_file = read_optional(entries, "PROVISION_CA_FILE");
  if (config.ca_file) require_readable("PROVISION_CA_FILE", *config.ca_file);
  if (const auto age = read_optional(entries, "PROVISION_KEY_MAX_AGE")) {
    config.key_max_age_seconds = keystore::parse_duration(*age);
    if (!config.key_max_age_seconds)
      fail("PROVISION_KEY_MAX_AGE", *age, "expected an integer with s, m, h or d (365d)");
  }
  if (const std::string* format = given(entries, "PROVISION_KEY_FORMAT", "json")) {
    const std::string word = lower(*format);
    if (word == "json") {
      config.key_format = KeyFormat::json;
    } else if (word == "pem") {
      config.key_format = KeyFormat::pem;
    } else {
      fail("PROVISION_KEY_FORMAT", *format, "expected json or pem");
    }
  }
  if (const std::string* level = given(entries, "LOG_LEVEL", "info")) {
    const std::string word = lower(*level);
    if (word == "debug") {
      config.log_level = LogLevel::debug;
    } else if (word == "info") {
      config.log_level = LogLevel::info;
    } else if (word == "warning" || word == "warn") {
      config.log_level = LogLevel::warning;
    } else if (word == "error") {
      config.log_level = LogLevel::error;
    } else {
      fail("LOG_LEVEL", *level, "expected debug, info, warning or error");
    }
  }
  return config;
}

std::vector<std::string> describe_config(const Config& config) {
  std::vector<std::string> lines;
  for (const auto& variable : config_variables()) {
    const auto it = config.entries.find(variable.env);
    const bool shown = it != config.entries.end() && (it->second.set || !it->second.value.empty());
    if (!shown) {
      if (std::string_view(variable.env) == "MQTT_CA_CERTS" && config.inline_ca_pem) {
        lines.push_back("MQTT_CA_CERTS=(inline caCert) (broker-config)");
      } else {
        lines.push_back(fmt::format("{}= (unset)", variable.env));
      }
      continue;
    }
    const std::string value = variable.secret ? kMask : escape_controls(it->second.value);
    lines.push_back(fmt::format("{}={} ({})", variable.env, value, to_string(it->second.source)));
  }
  return lines;
}

}  // namespace pa
