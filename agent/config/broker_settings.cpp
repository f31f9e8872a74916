// Broker settings that arrive as one text: MQTT_BROKER_URL's list of URLs (SPEC section 3.6) and
// the MQTT_BROKER_CONFIG JSON of the provisioning response (seeds/dynamic-broker-config.md).
#include <fmt/format.h>
#include <rapidjson/document.h>
#include <rapidjson/error/en.h>

#include <charconv>

#include "base/text.hpp"
#include "config/parsing.hpp"

namespace pa::config_parsing {
namespace {

constexpr const char* kUrlName = "MQTT_BROKER_URL";
constexpr const char* kExpected = "expected mqtt://host[:port] or mqtts://host[:port]";

// Never echo credentials: they belong in MQTT_USER / MQTT_PASSWORD.
std::string without_credentials(std::string_view url) {
  const std::size_t separator = url.find("://");
  if (separator == std::string_view::npos) return std::string(url);
  const std::string_view rest = url.substr(separator + 3);
  const std::size_t at = rest.find('@');
  if (at == std::string_view::npos) return std::string(url);
  return fmt::format("{}://****@{}", lower(url.substr(0, separator)), rest.substr(at + 1));
}

std::vector<std::string_view> split_list(std::string_view list) {
  std::vector<std::string_view> items;
  while (true) {
    const std::size_t comma = list.find(',');
    items.push_back(trim(list.substr(0, comma)));
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return items;
}

// One URL. A problem is reported as `invalid MQTT_BROKER_URL=<shown>: <context><why>`.
BrokerUrl parse_url(std::string_view url, const std::string& shown, const std::string& context) {
  auto bad = [&](std::string_view why) { fail(kUrlName, shown, context + std::string(why)); };
  BrokerUrl result;
  const std::size_t separator = url.find("://");
  if (separator == std::string_view::npos) bad(kExpected);
  const std::string scheme = lower(url.substr(0, separator));
  if (scheme == "mqtts") {
    result.tls = true;
  } else if (scheme != "mqtt") {
    bad(fmt::format("unsupported scheme \"{}\"; {}", escape_controls(scheme), kExpected));
  }
  std::string_view rest = url.substr(separator + 3);
  if (rest.find('@') != std::string_view::npos)
    bad("credentials in the URL are not supported; use MQTT_USER and MQTT_PASSWORD");
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  if (rest.find_first_of("/?#") != std::string_view::npos) bad(kExpected);

  std::string_view port_text;
  bool has_port = false;
  if (!rest.empty() && rest.front() == '[') {  // IPv6 literal: [::1]:1883
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) bad(kExpected);
    result.host = std::string(rest.substr(1, close - 1));
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') bad(kExpected);
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
  if (result.host.empty()) bad(fmt::format("missing host; {}", kExpected));
  if (has_port) {
    int port = 0;
    const char* end = port_text.data() + port_text.size();
    const auto [ptr, ec] = std::from_chars(port_text.data(), end, port);
    if (port_text.empty() || ec != std::errc() || ptr != end || port < 1 || port > 65535)
      bad("expected a port 1..65535");
    result.port = port;
  }
  return result;
}

}  // namespace

std::vector<BrokerUrl> parse_broker_urls(const std::string& list) {
  const std::vector<std::string_view> items = split_list(list);
  if (items.size() == 1) return {parse_url(items.front(), without_credentials(list), "")};
  std::vector<std::string> shown_items;
  for (std::string_view item : items) shown_items.push_back(without_credentials(item));
  const std::string shown = fmt::format("{}", fmt::join(shown_items, ","));
  std::vector<BrokerUrl> urls;
  for (std::size_t i = 0; i < items.size(); ++i) {
    const std::string context = fmt::format("entry {} of the list: ", i + 1);
    if (items[i].empty()) fail(kUrlName, shown, context + "empty; " + kExpected);
    urls.push_back(parse_url(items[i], shown, context));
  }
  return urls;
}

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
  // "broker": one URL, a comma-separated list, or an array of URLs (fail-over, SPEC 3.6).
  auto urls_at = [&](const rapidjson::Value& object) -> std::optional<std::string> {
    const rapidjson::Value* value = member(object, "broker");
    if (value == nullptr || !value->IsArray()) return string_at(object, "broker", "broker");
    std::vector<std::string> urls;
    for (const auto& url : value->GetArray()) {
      if (!url.IsString()) bad("\"broker\" must be a string or an array of strings");
      urls.emplace_back(url.GetString(), url.GetStringLength());
    }
    if (urls.empty()) bad("\"broker\" must not be an empty array");
    return fmt::format("{}", fmt::join(urls, ","));
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
  put("MQTT_BROKER_URL", urls_at(*mqtt));
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

}  // namespace pa::config_parsing
