#pragma once
// The daemon: MQTT session -> decode/decrypt -> worker pool -> plugin -> key store / publish.
// Data flows one way; no layer reaches back up.
#include <atomic>
#include <memory>
#include <optional>
#include <string>

#include "agent_key.hpp"
#include "config.hpp"
#include "envelope.hpp"
#include "host.hpp"
#include "keystore/key_store.hpp"
#include "mqtt_session.hpp"
#include "plugin_loader.hpp"
#include "replay.hpp"
#include "request.hpp"
#include "service_notify.hpp"
#include "worker_pool.hpp"

namespace pa {

inline constexpr const char* kVersion = PA_VERSION;

// What the response of SPEC section 3.3 reports about one request.
struct Outcome {
  std::string device_id;
  std::optional<std::string> request_id;
  std::optional<std::string> user_id;
  std::string action;
  bool encrypted = false;
  std::optional<std::string> fingerprint;
  std::optional<RequestError> error;
};

// The response JSON of SPEC section 3.3.
std::string response_message(const Outcome& outcome);

// The agent's status topic: P/agents/<client id>/status.
std::string status_topic(const Config& config);

class Agent {
 public:
  // Opens the key store and loads the plugins. Throws ConfigError (exit 78).
  explicit Agent(Config config);
  ~Agent();

  // Serves requests until `stop` is set, then shuts down gracefully (SPEC section 8).
  // Returns the exit status.
  int run(const std::atomic<bool>& stop);

 private:
  void accept(InboundMessage&& message);       // network thread: filter and enqueue
  void handle(const InboundMessage& message);  // worker thread
  Outcome serve(const InboundMessage& message);
  void respond(const InboundMessage& message, const Outcome& outcome);
  std::variant<std::string, RequestError> decrypt(const Envelope& envelope,
                                                  const std::string& device_id);
  void report_replay(const Request& request, const ReplayRefusal& refusal);
  ServiceState service_state() const;  // event loop thread: what systemd's STATUS= shows

  Config config_;
  keystore::KeyStore store_;
  HostServices services_;
  plugin::PluginSet plugins_;
  // systemd: READY, STATUS, WATCHDOG, STOPPING (SPEC section 8).
  ServiceNotifier notifier_;
  AgentKey agent_key_;                                 // SPEC section 4
  std::optional<e2ee::SignatureVerifier> server_key_;  // PROVISION_SERVER_PUBKEY
  std::unique_ptr<ReplayGuard> replay_;                // SPEC section 3.1
  std::unique_ptr<mqtt::Session> session_;
  std::unique_ptr<WorkerPool> pool_;
};

}  // namespace pa
