#pragma once
// Inside pa_config: what config.cpp and broker_settings.cpp share. Not for other targets.
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pa::config_parsing {

// The one-line error of SPEC section 2: `invalid NAME="value": why` (ConfigError).
[[noreturn]] void fail(std::string_view name, std::string_view value, std::string_view why);

std::string lower(std::string_view text);
std::string_view trim(std::string_view text);

// A whole file of at most 1 MiB; the error names the variable and the path.
std::string read_small_file(std::string_view name, const std::string& path);
// Fails unless the file can be opened and read.
void require_readable(std::string_view name, const std::string& path);

// What makes a client id unique per Pi: the first 12 hex digits of the machine id, else the host
// name.
std::string machine_suffix(const std::string& machine_id_path);

// One entry of MQTT_BROKER_URL.
struct BrokerUrl {
  std::string host;
  std::optional<int> port;  // nullopt: the scheme's default
  bool tls = false;
};
// MQTT_BROKER_URL's comma-separated list, each entry checked (SPEC section 3.6); at least one.
std::vector<BrokerUrl> parse_broker_urls(const std::string& list);

// The values an MQTT_BROKER_CONFIG file contributes, by variable name.
struct BrokerConfigFile {
  std::map<std::string, std::string> values;
  std::optional<std::string> ca_pem;
};
BrokerConfigFile parse_broker_config(const std::string& path);

}  // namespace pa::config_parsing
