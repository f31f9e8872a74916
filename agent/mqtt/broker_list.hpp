#pragma once
// The brokers a session may use, tried in order (SPEC section 3.6): MQTT_BROKER_URL's comma-
// separated list. The configuration parses the variable; the session and `check` take the list.
#include <string>
#include <string_view>
#include <vector>

namespace pa::mqtt {

struct BrokerAddress {
  std::string host;
  int port = 1883;
  bool tls = false;
};

// "host:port" ("[::1]:1883" for an IPv6 literal), as logs, STATUS= and the status message name it.
std::string to_string(const BrokerAddress& broker);

// Parses "mqtt://a:1883,mqtts://b" (a port left out is 1883, or 8883 with mqtts); blanks around
// the commas are ignored. Throws std::invalid_argument naming the entry that is not
// mqtt[s]://host[:port].
std::vector<BrokerAddress> parse_broker_list(std::string_view text);

}  // namespace pa::mqtt
