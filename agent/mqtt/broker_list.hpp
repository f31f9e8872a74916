#pragma once
// The brokers a session may use, tried in order (SPEC section 3.6): Config::brokers, from
// MQTT_BROKER_URL's comma-separated list (the configuration parses it).
#include <string>

#include "config/config.hpp"

namespace pa::mqtt {

using BrokerAddress = pa::BrokerAddress;

// "host:port" ("[::1]:1883" for an IPv6 literal), as logs, STATUS= and the status message name it.
std::string to_string(const BrokerAddress& broker);

}  // namespace pa::mqtt
