// The MQTT_BROKER_CONFIG JSON (SPEC section 2, seeds/dynamic-broker-config.md) through load_config,
// which also expands its "broker" URL.
//
// A file is either refused with one ConfigError line or gives a configuration whose every value
// passed validation; the password never shows in `config` output.
#include <cstdint>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "fuzz_support.hpp"

namespace {

using namespace pa;

bool has_space(const std::string& text) {
  for (char c : text)
    if (c == ' ' || (c >= '\t' && c <= '\r')) return true;
  return false;
}

void check_config(const Config& config) {
  PA_FUZZ_CHECK(!config.mqtt_host.empty() && !has_space(config.mqtt_host), config.mqtt_host);
  PA_FUZZ_CHECK(config.mqtt_port >= 1 && config.mqtt_port <= 65535,
                std::to_string(config.mqtt_port));
  PA_FUZZ_CHECK(config.mqtt_keepalive >= 5 && config.mqtt_keepalive <= 65535,
                std::to_string(config.mqtt_keepalive));
  PA_FUZZ_CHECK(!config.mqtt_client_id.empty() && config.mqtt_client_id.size() <= 128 &&
                    config.mqtt_client_id.find_first_of("/+#") == std::string::npos,
                config.mqtt_client_id);
  PA_FUZZ_CHECK(!config.mqtt_password || config.mqtt_user, "a password without a user");
  if (config.inline_ca_pem)
    PA_FUZZ_CHECK(config.inline_ca_pem->find("-----BEGIN") != std::string::npos,
                  *config.inline_ca_pem);
  for (const auto& [name, entry] : config.entries)
    if (entry.source == ConfigSource::broker_config) PA_FUZZ_CHECK(entry.set, name);

  for (const std::string& line : describe_config(config)) {
    PA_FUZZ_CHECK(line.find('\n') == std::string::npos, line);
    if (config.mqtt_password && line.rfind("MQTT_PASSWORD=", 0) == 0)
      PA_FUZZ_CHECK(line.rfind("MQTT_PASSWORD=******** (", 0) == 0, line);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static fuzz::MemoryFile file;
  file.assign(fuzz::as_text(data, size));
  ConfigInputs inputs;
  inputs.flags["MQTT_BROKER_CONFIG"] = file.path();
  try {
    check_config(load_config(inputs));
  } catch (const ConfigError& error) {
    PA_FUZZ_CHECK(std::string_view(error.what()).find('\n') == std::string_view::npos,
                  error.what());
  }
  return 0;
}
