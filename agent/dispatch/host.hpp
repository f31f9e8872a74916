#pragma once
// The host function table given to plugins (SPEC section 6) and the per-request pa_call behind
// it: key store operations, key generation, publishing, configuration and logging.
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "audit/audit_log.hpp"
#include "config/config.hpp"
#include "dispatch/key_pool.hpp"
#include "intake/request.hpp"
#include "intake/spool.hpp"
#include "keystore/key_store.hpp"
#include "provision/plugin.h"

namespace pa {

// What a handler can reach. Owned by the agent; outlives every call.
struct HostServices {
  const Config* config = nullptr;
  keystore::KeyStore* store = nullptr;
  // Publishes with QoS 1; returns the message id, or nullopt when the client refused it.
  std::function<std::optional<int>(const std::string& topic, const std::string& payload,
                                   bool retain)>
      publish;
  std::string agent_id;
  // Records, fsynced, that request `seq` is about to change a device's key (SPEC 3.4), so that
  // serving it again after a crash does not change it twice. false: it could not be recorded.
  std::function<bool(std::uint64_t seq, const ChangeIntent& intent)> begin_change;
  // Signs a statement with the agent key: the attestation of SPEC 3.2 (a JWS compact RS256).
  // Unset in tools that publish nothing.
  std::function<std::string(std::string_view payload_json)> attest;
  // Where key operations are recorded (SPEC section 5); none: not recorded.
  audit::AuditLog* audit = nullptr;
  // Pairs generated ahead (SPEC 3.4); none: every pair is generated for its request.
  KeyPool* key_pool = nullptr;
  // Each pair generated for a request (not taken from the pool), with how long it took.
  std::function<void(keystore::KeyType, std::chrono::duration<double>)> key_generated;
};

// One loaded plugin's view of the host (SPEC section 6): its own function table whose handle
// knows the services, the plugin's validated options and, during init(), where its
// register_action() calls go. Move-only: the table points at the handle it owns.
class PluginHost {
 public:
  // `options`: the plugin's options by name, with their validated values (nullopt: unset).
  PluginHost(const HostServices& services,
             std::map<std::string, std::optional<std::string>> options = {});
  PluginHost(const PluginHost&) = delete;
  PluginHost& operator=(const PluginHost&) = delete;
  ~PluginHost();

  const pa_host* table() const noexcept { return &table_; }

  // register_action() works between these two calls (around init()) and goes to the function.
  void open_registration(std::function<int(const pa_action*)> register_action);
  void close_registration();

 private:
  std::unique_ptr<pa_host_handle> handle_;
  pa_host table_{};
};

}  // namespace pa

// A plugin's handle on the host (opaque to plugins): the first argument of every host function.
struct pa_host_handle {
  const pa::HostServices* services = nullptr;
  std::map<std::string, std::optional<std::string>> options;
  bool in_init = false;
  std::function<int(const pa_action*)> register_action;
};

// One request in flight through a plugin (opaque to plugins).
struct pa_call {
  const pa::HostServices* services = nullptr;
  const pa::Request* request = nullptr;
  pa_request c_request{};                  // the C view handed to the plugin
  std::optional<std::string> fingerprint;  // of the key published, for the response
  // The pair key_generate just stored, as store() derived it: publishing it needs no re-read.
  std::optional<pa::keystore::StoredKey> stored;
  std::optional<pa::RequestError> error;  // set by the plugin via set_error
  std::uint64_t seq = 0;                  // the request's intake sequence number
  // Served again after a crash that happened after this key change had begun: the fingerprint
  // the key had before it. A key that differs now means the change was done.
  std::optional<pa::ChangeIntent> redo;
  bool intent_recorded = false;
  std::vector<int> message_ids;  // what this request published (acknowledgements are awaited)
  bool published_key = false;
  std::deque<std::string> strings;  // what request_string() returned, alive until the call ends
};

namespace pa {

// Fills call.c_request from call.request (strings point into *call.request).
void prepare_call(pa_call& call, const std::string& effective_key_type);

// Publishes the device's stored public key for `call`'s request (what publish_key does for a
// plugin); used to answer a retry of a request that published a key. Returns a pa_status.
int publish_stored_key(pa_call& call);

// The K/D/public payload of SPEC section 3.2 for a stored key: with the attestation when the
// services can attest, and `csr` when given. Throws what services.attest throws.
std::string key_message(const HostServices& services, const Request& request,
                        const keystore::StoredKey& key, const std::optional<std::string>& csr);

// Maps a plugin's status to the response error code.
ErrorCode error_code_for_status(int status) noexcept;

}  // namespace pa
