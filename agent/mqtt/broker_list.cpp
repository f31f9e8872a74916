#include "mqtt/broker_list.hpp"

#include <fmt/format.h>

#include <cctype>
#include <stdexcept>

namespace pa::mqtt {
namespace {

std::string_view trimmed(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())))
    text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.remove_suffix(1);
  return text;
}

BrokerAddress parse_one(std::string_view url) {
  auto bad = [&] {
    return std::invalid_argument(
        fmt::format("\"{}\" is not mqtt://host[:port] or mqtts://host[:port]", url));
  };
  BrokerAddress broker;
  std::string_view rest;
  if (url.rfind("mqtt://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("mqtts://", 0) == 0) {
    rest = url.substr(8);
    broker.tls = true;
  } else {
    throw bad();
  }
  if (!rest.empty() && rest.back() == '/') rest.remove_suffix(1);
  std::string_view port;
  if (!rest.empty() && rest.front() == '[') {
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) throw bad();
    broker.host = std::string(rest.substr(1, close - 1));
    rest = rest.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') throw bad();
      port = rest.substr(1);
      if (port.empty()) throw bad();
    }
  } else {
    const std::size_t colon = rest.find(':');
    broker.host = std::string(rest.substr(0, colon));
    if (colon != std::string_view::npos) {
      port = rest.substr(colon + 1);
      if (port.empty()) throw bad();
    }
  }
  if (broker.host.empty() || broker.host.find_first_of("/?#@ ") != std::string::npos) throw bad();
  broker.port = broker.tls ? 8883 : 1883;
  if (!port.empty()) {
    int value = 0;
    for (const char c : port) {
      if (!std::isdigit(static_cast<unsigned char>(c)) || value > 65535) throw bad();
      value = value * 10 + (c - '0');
    }
    if (value < 1 || value > 65535) throw bad();
    broker.port = value;
  }
  return broker;
}

}  // namespace

std::string to_string(const BrokerAddress& broker) {
  if (broker.host.find(':') != std::string::npos)
    return fmt::format("[{}]:{}", broker.host, broker.port);
  return fmt::format("{}:{}", broker.host, broker.port);
}

std::vector<BrokerAddress> parse_broker_list(std::string_view text) {
  std::vector<BrokerAddress> brokers;
  while (true) {
    const std::size_t comma = text.find(',');
    brokers.push_back(parse_one(trimmed(text.substr(0, comma))));
    if (comma == std::string_view::npos) break;
    text.remove_prefix(comma + 1);
  }
  return brokers;
}

}  // namespace pa::mqtt
