#pragma once
// The host function table given to plugins (SPEC section 6) and the per-request pa_call behind
// it: key store operations, key generation, publishing, configuration and logging.
#include <functional>
#include <optional>
#include <string>

#include "config.hpp"
#include "keystore/key_store.hpp"
#include "provision/plugin.h"
#include "request.hpp"

namespace pa {

// What a handler can reach. Owned by the agent; outlives every call.
struct HostServices {
  const Config* config = nullptr;
  keystore::KeyStore* store = nullptr;
  // Publishes with QoS 1; returns false when the client refused the message.
  std::function<bool(const std::string& topic, const std::string& payload, bool retain)> publish;
  std::string agent_id;
};

// The table handed to every plugin's init(). Its functions reach the configuration through
// `services` (set once before plugins load: config_get has no call argument).
const pa_host* host_table(const HostServices& services);

}  // namespace pa

// One request in flight through a plugin (opaque to plugins).
struct pa_call {
  const pa::HostServices* services = nullptr;
  const pa::Request* request = nullptr;
  pa_request c_request{};                  // the C view handed to the plugin
  std::optional<std::string> fingerprint;  // of the key published, for the response
  // The pair key_generate just stored, as store() derived it: publishing it needs no re-read.
  std::optional<pa::keystore::StoredKey> stored;
  std::optional<pa::RequestError> error;  // set by the plugin via set_error
};

namespace pa {

// Fills call.c_request from call.request (strings point into *call.request).
void prepare_call(pa_call& call, const std::string& effective_key_type);

// The K/D/public payload of SPEC section 3.2 for a stored key.
std::string key_message(const Config& config, const Request& request,
                        const keystore::StoredKey& key, const std::string& agent_id);

// Maps a plugin's status to the response error code.
ErrorCode error_code_for_status(int status) noexcept;

}  // namespace pa
