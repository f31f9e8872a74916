#pragma once
// The daemon: MQTT session -> intake spool -> decode/decrypt -> ledger -> worker pool -> plugin
// -> key store / publish. Data flows one way; no layer reaches back up.
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent_metrics.hpp"
#include "audit/audit_log.hpp"
#include "config/config.hpp"
#include "dispatch/ack_tracker.hpp"
#include "dispatch/host.hpp"
#include "dispatch/key_pool.hpp"
#include "dispatch/plugin_loader.hpp"
#include "dispatch/worker_pool.hpp"
#include "intake/agent_key.hpp"
#include "intake/envelope.hpp"
#include "intake/ledger.hpp"
#include "intake/request.hpp"
#include "intake/spool.hpp"
#include "keystore/instance_lock.hpp"
#include "keystore/key_store.hpp"
#include "mqtt/session.hpp"
#include "rotation_watcher.hpp"
#include "service_notify.hpp"

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

// Whether an MQTT 5 Response Topic may be answered on (SPEC 3.5): a topic without wildcards
// under P/ whose last level is not request, update or delete, and not an agent's own topic.
bool is_acceptable_response_topic(const std::string& topic, const std::string& provision_base);

class Agent {
 public:
  // Opens the key store, the state folder (spool, ledger, agent key) and loads the plugins.
  // Throws ConfigError (exit 78).
  explicit Agent(Config config);
  ~Agent();

  // Serves requests until `stop` is set, then shuts down gracefully (SPEC section 8).
  // Returns the exit status.
  int run(const std::atomic<bool>& stop);

 private:
  // How one request is answered.
  struct Reply {
    Outcome outcome;
    std::string payload;  // the response JSON
    bool silent = false;  // a retry of a request still in flight: no answer of its own
    bool duplicate = false;
  };

  void accept(InboundMessage&& message);  // network thread: vet, spool, enqueue
  void answer_now(const InboundMessage& message, ErrorCode code, std::string text);
  void handle(const InboundMessage& message, const std::optional<ChangeIntent>& redo);  // worker
  Reply serve(const InboundMessage& message, const std::optional<ChangeIntent>& redo,
              std::vector<int>& message_ids);
  void respond(const InboundMessage& message, const Reply& reply, std::vector<int>& message_ids);
  std::variant<std::string, RequestError> decrypt(const Envelope& envelope,
                                                  const std::string& device_id);
  void report_replay(const Request& request, const std::string& reason);
  bool is_destructive(const Request& request) const;
  ServiceState service_state() const;  // event loop thread: what systemd's STATUS= shows

  Config config_;
  keystore::KeyStore store_;
  std::optional<keystore::InstanceLock> store_lock_;  // SPEC 5: one agent per key store
  std::optional<keystore::InstanceLock> state_lock_;  // ... and per state folder
  HostServices services_;
  plugin::PluginSet plugins_;
  // systemd: READY, STATUS, WATCHDOG, STOPPING (SPEC section 8).
  ServiceNotifier notifier_;
  AgentKey agent_key_;                                 // SPEC section 4
  std::optional<e2ee::SignatureVerifier> server_key_;  // PROVISION_SERVER_PUBKEY
  std::unique_ptr<RequestLedger> ledger_;              // SPEC sections 3.1 and 3.4
  std::unique_ptr<IntakeSpool> spool_;                 // SPEC section 3.4
  std::unique_ptr<audit::AuditLog> audit_;             // SPEC section 5
  AckTracker acks_;
  // Before the session and the workers, which use them, so destroyed after them; the metrics
  // before the key pool too, whose thread reports to them until it is joined.
  std::unique_ptr<AgentMetrics> metrics_;  // SPEC section 8
  std::unique_ptr<KeyPool> key_pool_;      // SPEC 3.4: pairs generated ahead
  std::unique_ptr<mqtt::Session> session_;
  std::unique_ptr<WorkerPool> pool_;
  std::unique_ptr<RotationWatcher> rotation_;    // SPEC section 5: keys due for rotation
  std::string online_status_;                    // the retained status, without counters
  std::atomic<std::uint32_t> announcements_{0};  // online statuses the session published
};

}  // namespace pa
