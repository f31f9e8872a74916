#pragma once
// The agent's own RSA key pair (SPEC section 4): it lets a server encrypt even the first request
// for a device that has no key yet. Found, in this order: PROVISION_AGENT_KEY,
// $PROJECT_ROOT/keys/private.pem when it exists (the original agent's key), else
// <state folder>/agent_private.pem, generated as RSA-2048 (0600) on first start.
#include <sys/types.h>

#include <optional>
#include <string>

#include "config/config.hpp"

namespace pa {

struct AgentKey {
  std::string path;        // the private key file, read again for every decryption
  std::string public_pem;  // SubjectPublicKeyInfo, published in the retained status message
  bool generated = false;  // made on this start
};

// Finds, checks (an RSA private key the agent can read, owned and protected like the key store
// root: SPEC section 5) or generates the agent key. The private key is not kept in memory. Throws
// ConfigError (exit 78) naming the variable or file.
AgentKey load_agent_key(const Config& config, std::optional<gid_t> key_group = std::nullopt);

// The agent key as load_agent_key finds and checks it, but never generated: nullopt when there is
// none yet (for the operator commands, which change nothing). Throws ConfigError as above.
std::optional<AgentKey> find_agent_key(const Config& config,
                                       std::optional<gid_t> key_group = std::nullopt);

}  // namespace pa
