// Configuration (SPEC section 2): raw values from flags, environment, env file and broker-config
// JSON, resolved by precedence, then typed and validated by the rows of the configuration table
// (variables.cpp). Every problem is one ConfigError line.
#include "config/config.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/os.h>
#include <fnmatch.h>
#include <pwd.h>
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

#include "base/log.hpp"
#include "base/text.hpp"
#include "config/env_file.hpp"
#include "config/parsing.hpp"
#include "keystore/rotation.hpp"

namespace pa {

namespace config_parsing {

constexpr std::size_t kMaxFileSize = 1 << 20;  // password and broker-config files are small

void fail(std::string_view name, std::string_view value, std::string_view why) {
  throw ConfigError(fmt::format("invalid {}={}: {}", name, quoted(value), why));
}

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string_view trim(std::string_view text) {
  auto space = [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; };
  while (!text.empty() && space(text.front())) text.remove_prefix(1);
  while (!text.empty() && space(text.back())) text.remove_suffix(1);
  return text;
}

namespace {

// Reads a whole file (up to kMaxFileSize) or, for a readability check, its first byte.
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

}  // namespace

std::string read_small_file(std::string_view name, const std::string& path) {
  return read_file_for(name, path, true);
}

void require_readable(std::string_view name, const std::string& path) {
  read_file_for(name, path, false);
}

std::string machine_suffix(const std::string& machine_id_path) {
  return machine_id_digits(machine_id_path).value_or(host_name());
}

}  // namespace config_parsing

namespace {

namespace fs = std::filesystem;
using namespace config_parsing;
using Entries = std::map<std::string, Config::Entry>;

constexpr const char* kMask = "********";

int rank(ConfigSource source) {
  return static_cast<int>(source);
}

fs::path make_absolute(std::string_view name, const fs::path& path) {
  if (path.is_absolute()) return path.lexically_normal();
  std::error_code error;
  const fs::path absolute = fs::absolute(path, error);
  if (error) fail(name, path.string(), fmt::format("cannot make it absolute: {}", error.message()));
  return absolute.lexically_normal();
}

std::optional<std::int64_t> parse_integer(std::string_view text) {
  std::int64_t number = 0;
  const char* end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, number);
  if (text.empty() || ec != std::errc() || ptr != end) return std::nullopt;
  return number;
}

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> items;
  while (true) {
    const std::size_t comma = text.find(',');
    const std::string_view item = trim(text.substr(0, comma));
    if (!item.empty()) items.emplace_back(item);
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return items;
}

// The text of one variable typed by its row; the row's error line when it is invalid.
ConfigValue parse_value(const ConfigVariable& row, const std::string& text) {
  auto refuse = [&](std::string_view why) { fail(row.env, text, why); };
  if (row.check) {
    if (const std::optional<std::string> why = row.check(text)) refuse(*why);
  }
  switch (row.kind) {
    case VariableKind::integer: {
      const std::optional<std::int64_t> number = parse_integer(text);
      if (!number || *number < row.min || *number > row.max) refuse(row.expectation());
      return *number;
    }
    case VariableKind::boolean: {
      const std::optional<bool> value = parse_boolean(text);
      if (!value) refuse(row.expectation());
      return *value;
    }
    case VariableKind::choice: {
      const auto value = parse_enum(row.choices, text);
      if (!value) refuse(row.expectation());
      return *value;
    }
    case VariableKind::duration: {
      const std::optional<std::int64_t> seconds = keystore::parse_duration(text);
      if (!seconds || *seconds < row.min || *seconds > row.max) refuse(row.expectation());
      return *seconds;
    }
    case VariableKind::list:
    case VariableKind::url_list: {
      std::vector<std::string> items = split_list(text);
      if (items.empty()) refuse(row.expectation());
      return items;
    }
    case VariableKind::path:
      switch (row.path_check) {
        case PathCheck::readable_file:
          require_readable(row.env, text);
          break;
        case PathCheck::folder_exists: {
          const fs::path folder = fs::path(text).parent_path();
          std::error_code error;
          if (text.empty() || text.back() == '/') refuse("expected a file name, not a folder");
          if (!folder.empty() && !fs::is_directory(folder, error))
            refuse(fmt::format("its folder {} does not exist", folder.string()));
          break;
        }
        case PathCheck::none:
          break;
      }
      return text;
    case VariableKind::text:
      return text;
  }
  return text;
}

// The weakest value a stronger source did not set: the broker-config JSON fills only gaps.
void fill_gaps(Entries& entries, const std::map<std::string, std::string>& values,
               ConfigSource source) {
  for (const auto& [name, value] : values) {
    Config::Entry& entry = entries[name];
    if (!entry.set) entry = Config::Entry{value, source, true};
  }
}

// MQTT_BROKER_URL: its first broker expands into MQTT_HOST, MQTT_PORT and MQTT_USE_TLS at the
// URL's own rank (explicit values of equal or higher rank win); the whole list is returned.
std::vector<BrokerUrl> expand_broker_urls(Entries& entries) {
  const Config::Entry url = entries["MQTT_BROKER_URL"];
  if (!url.set || url.value.empty()) return {};
  std::vector<BrokerUrl> urls = parse_broker_urls(url.value);
  const BrokerUrl& first = urls.front();
  auto weaker = [&](const char* name) {
    const Config::Entry& entry = entries[name];
    return !entry.set || rank(entry.source) < rank(url.source);
  };
  if (weaker("MQTT_HOST")) entries["MQTT_HOST"] = {first.host, url.source, true};
  if (weaker("MQTT_USE_TLS"))
    entries["MQTT_USE_TLS"] = {first.tls ? "true" : "false", url.source, true};
  if (weaker("MQTT_PORT")) {
    // Without a port the URL means the scheme's default, so a weaker port is dropped too.
    entries["MQTT_PORT"] =
        first.port ? Config::Entry{std::to_string(*first.port), url.source, true} : Config::Entry{};
  }
  return urls;
}

// Key store root: PROVISION_KEYS_DIR, $PROJECT_ROOT/sensor_keys, $STATE_DIRECTORY/sensor_keys
// (systemd), ./sensor_keys; the entry shows the resolved folder and who decided it.
void resolve_keys_dir(Config& config) {
  Config::Entry& keys_entry = config.entries["PROVISION_KEYS_DIR"];
  if (keys_entry.set && !keys_entry.value.empty()) {
    config.keys_dir = make_absolute("PROVISION_KEYS_DIR", keys_entry.value).string();
    keys_entry.value = config.keys_dir;
    return;
  }
  const char* state = std::getenv("STATE_DIRECTORY");
  // StateDirectory= with several folders gives a colon-separated list; the first is ours.
  std::string state_dir = state != nullptr ? state : "";
  state_dir = state_dir.substr(0, state_dir.find(':'));
  if (config.project_root) {
    config.keys_dir =
        make_absolute("PROJECT_ROOT", fs::path(*config.project_root) / "sensor_keys").string();
    keys_entry.source = config.entries["PROJECT_ROOT"].source;
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

void read_password_file(Config& config) {
  const Config::Entry& entry = config.entries["MQTT_PASSWORD_FILE"];
  if (!entry.set || entry.value.empty()) return;
  std::string password = read_small_file("MQTT_PASSWORD_FILE", entry.value);
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r'))
    password.pop_back();
  config.mqtt_password = std::move(password);
}

// Rules between variables.
void check_combinations(Config& config) {
  if (config.mqtt_password && !config.mqtt_user) {
    const bool from_file = config.entries["MQTT_PASSWORD_FILE"].set;
    fail("MQTT_USER", "",
         fmt::format("must be set when {} is", from_file ? "MQTT_PASSWORD_FILE" : "MQTT_PASSWORD"));
  }
  if (config.mqtt_certfile && !config.mqtt_keyfile)
    fail("MQTT_CERTFILE", *config.mqtt_certfile, "MQTT_KEYFILE must be set too (mutual TLS)");
  if (config.mqtt_keyfile && !config.mqtt_certfile)
    fail("MQTT_KEYFILE", *config.mqtt_keyfile, "MQTT_CERTFILE must be set too (mutual TLS)");
}

}  // namespace

Config::Config() {
  for (const ConfigVariable& row : config_variables()) {
    if (row.assign && !row.default_value.empty())
      row.assign(*this, parse_value(row, row.default_value));
  }
}

const char* to_string(ConfigSource source) noexcept {
  return enum_name(kConfigSourceNames, source).data();
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
  if (const char* state = std::getenv("STATE_DIRECTORY"); state != nullptr && *state != '\0') {
    const std::string list = state;
    return make_absolute("STATE_DIRECTORY", list.substr(0, list.find(':'))).string();
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
      if (find_config_variable(name) != nullptr)
        entries[name] = Config::Entry{value, source, true};
      else if (is_plugin_variable(name))
        config.plugin_entries[name] = Config::Entry{value, source, true};
    }
  };
  if (inputs.env_file) apply(parse_env_file(*inputs.env_file), ConfigSource::env_file);
  apply(inputs.environment, ConfigSource::environment);
  apply(inputs.flags, ConfigSource::flag);

  // The broker-config JSON ranks just above the defaults: it only fills what nothing else set.
  if (const Config::Entry& file = entries["MQTT_BROKER_CONFIG"]; file.set && !file.value.empty()) {
    BrokerConfigFile broker_config = parse_broker_config(file.value);
    fill_gaps(entries, broker_config.values, ConfigSource::broker_config);
    config.inline_ca_pem = std::move(broker_config.ca_pem);
  }
  const std::vector<BrokerUrl> urls = expand_broker_urls(entries);

  // Every given value typed by its row; then the defaults computed from other values (the port's
  // follows TLS), which are checked by the same rows.
  for (const ConfigVariable& row : config_variables()) {
    Config::Entry& entry = entries[row.env];
    if (entry.set) {
      if (row.assign && !(row.optional && entry.value.empty()))
        row.assign(config, parse_value(row, entry.value));
    } else {
      entry.value = row.compute_default ? std::string() : row.default_value;
    }
  }
  for (const ConfigVariable& row : config_variables()) {
    Config::Entry& entry = entries[row.env];
    if (entry.set || !row.compute_default) continue;
    entry.value = row.compute_default(config);
    if (row.assign) row.assign(config, parse_value(row, entry.value));
  }

  read_password_file(config);
  check_combinations(config);
  if (config.mqtt_ca_certs) config.inline_ca_pem.reset();  // an explicit CA file wins
  resolve_keys_dir(config);
  config.state_dir = default_state_dir();

  // The first broker is always the effective host, port and TLS; the rest of the list follows.
  config.brokers = {BrokerAddress{config.mqtt_host, config.mqtt_port, config.mqtt_use_tls}};
  for (std::size_t i = 1; i < urls.size(); ++i)
    config.brokers.push_back(
        {urls[i].host, urls[i].port.value_or(urls[i].tls ? 8883 : 1883), urls[i].tls});
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
