#pragma once
// Probing a broker as the agent would use it (SPEC sections 3.6 and 7): for `provision-agent
// check`, and for the session to tell "this broker does not speak MQTT 5" from other closed
// connections. A probe connects under a client id of its own ("<client id>-check": the agent's
// would take over a running agent's session) with a clean session, so it leaves nothing behind.
#include <chrono>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "mqtt/broker_list.hpp"

namespace pa::mqtt {

// One line of `check`: OK with what works, or FAIL with what is wrong and how to fix it.
struct Finding {
  bool ok = false;
  std::string what;  // "broker host:port"
  std::string text;  // OK: what works; FAIL: why
  std::string fix;   // FAIL only
};

// Connects to `broker` with the configured credentials, TLS settings and MQTT version; subscribes
// to the request topics for real (a user that may connect but not subscribe fails here, and so
// does a broker that closes the connection at SUBSCRIBE); names an MQTT version the broker does
// not speak; and reads the agent's retained status, which reports a client id conflict (SPEC
// 3.6). The whole probe is bounded by about `timeout`. One or two findings.
std::vector<Finding> check_broker(const Config& config, const BrokerAddress& broker,
                                  std::chrono::milliseconds timeout);

// Whether `broker` answers a CONNECT in `protocol` with a successful CONNACK within `timeout`.
bool accepts_protocol(const Config& config, const BrokerAddress& broker, MqttProtocol protocol,
                      std::chrono::milliseconds timeout);

// The fix for a broker that refused MQTT 5, in the words the log, STATUS= and `check` all use.
inline constexpr const char* kMqtt5RefusedFix =
    "the broker refused MQTT 5: set MQTT_PROTOCOL=3.1.1";

}  // namespace pa::mqtt
