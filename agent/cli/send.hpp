#pragma once
// `provision-agent send` (SPEC section 7): what a server does, from the command line. Publishes
// one request per device (optionally in the envelope of SPEC section 4, optionally signed), waits
// for each response and published key, prints them, and fails when any request did.
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "config/config.hpp"

namespace pa {

struct SendOptions {
  std::string action;                         // any action name; the agent resolves aliases
  std::vector<std::string> devices;           // one request each
  std::optional<std::string> user;            // user_id
  std::optional<std::string> encrypt_pubkey;  // --encrypt PUBKEY.pem
  bool encrypt_to_agent = false;              // --encrypt-to-agent: the agent's status key
  std::optional<std::string> agent;           // --agent ID: that agent's (its MQTT client id)
  std::optional<std::string> sign_key;        // --sign KEY.pem: the server's private key
  std::string mode = "EAX";                   // --mode EAX|GCM
  std::chrono::seconds wait{30};              // for all responses together; 0: do not wait
};

// How long send collects retained agent statuses on P/agents/+/status after its SUBACK.
inline constexpr std::chrono::seconds kAgentDiscovery{2};

// Connects with the broker settings of `config` (a client id of its own, never the agent's, which
// would take the agent's session over; clean session), sends and waits.
// With --encrypt-to-agent the key is the public_key of an agent's retained status (SPEC section
// 7): with --agent ID, that of P/agents/ID/status (an exact topic: RabbitMQ delivers no retained
// messages to wildcard subscriptions); without it, that of the only agent whose status on
// P/agents/+/status says "online" within kAgentDiscovery of the subscription (an error names the
// agents when there are several, and suggests --agent when there is none).
// Prints "<device> response <json>" and "<device> key <payload>" lines on `out`, problems on
// `err`. Returns 0 when every request succeeded, 1 when any failed or timed out, 78 for unusable
// options (unreadable key, invalid device id).
int run_send(const Config& config, const SendOptions& options, std::FILE* out, std::FILE* err);

}  // namespace pa
