#include "agent_metrics.hpp"

#include <utility>

#include "agent.hpp"

namespace pa {
namespace {

using metrics::Kind;

// Seconds: from an ed25519 pair (well under a millisecond) to RSA-4096 on a Pi Zero (a minute).
const std::vector<double> kGenerationBuckets = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                0.5,   1,     2.5,  5,     10,   30,  60};

double as_number(std::size_t value) {
  return static_cast<double>(value);
}

}  // namespace

AgentMetrics::AgentMetrics(const std::string& agent_id, std::optional<std::string> metrics_file,
                           Sources sources, std::chrono::steady_clock::duration status_interval)
    : sources_(std::move(sources)),
      status_interval_(status_interval),
      metrics_file_(std::move(metrics_file)) {
  auto& r = registry_;
  r.declare("provision_agent_info", Kind::gauge, "The agent's version and client id (always 1).",
            {}, false);
  r.declare("provision_agent_requests_total", Kind::counter,
            "Requests answered, by action and outcome (ok, an error code, or duplicate).");
  r.declare("provision_agent_key_generation_seconds", Kind::histogram,
            "Time to generate a key pair, by key type and path (request: while a request "
            "waited; pool: ahead, at idle priority).",
            kGenerationBuckets);
  r.declare("provision_agent_queue_depth", Kind::gauge,
            "Requests waiting for a worker (PROVISION_QUEUE_MAX bounds them).");
  r.declare("provision_agent_spool_depth", Kind::gauge,
            "Requests in the intake spool without a recorded outcome (waiting or running).");
  r.declare("provision_agent_broker_connected", Kind::gauge,
            "1 while connected to the MQTT broker, else 0.");
  r.declare("provision_agent_broker_reconnects_total", Kind::counter,
            "Connections to the broker after the first.");
  r.declare("provision_agent_sessions_lost_total", Kind::counter,
            "Reconnections the broker answered without our session (its queued requests lost).");
  r.declare("provision_agent_keys", Kind::gauge, "Key pairs in the key store, by key type.");
  r.declare("provision_agent_keys_due_rotation", Kind::gauge,
            "Devices whose key is due for rotation (PROVISION_KEY_MAX_AGE, certificates).");
  r.declare("provision_agent_audit_sequence", Kind::gauge,
            "Sequence number of the last audit log entry.");
  r.declare("provision_agent_key_pool_target", Kind::gauge,
            "Key pairs the pool keeps ready (PROVISION_KEY_POOL, less when memory cannot be "
            "locked).");
  r.declare("provision_agent_key_pool_keys", Kind::gauge, "Key pairs ready in the pool.");
  r.declare("provision_agent_key_pool_hits_total", Kind::counter,
            "Requests of the pool's key type answered with a pair from the pool.");
  r.declare("provision_agent_key_pool_misses_total", Kind::counter,
            "Requests of the pool's key type that found the pool empty.");
  r.declare("provision_agent_key_index_rescans_total", Kind::counter,
            "Times a lookup found the device index out of date (the key store changed by hand) "
            "and the store was scanned again.");
  r.set("provision_agent_info", {{"version", kVersion}, {"agent_id", agent_id}}, 1);
}

AgentMetrics::~AgentMetrics() {
  stop_writing();
}

void AgentMetrics::start_writing() {
  std::lock_guard lock(file_mutex_);
  if (metrics_file_ && !file_)
    file_ =
        std::make_unique<metrics::TextfileWriter>(*metrics_file_, registry_, [this] { collect(); });
}

void AgentMetrics::stop_writing() {
  std::lock_guard lock(file_mutex_);
  file_.reset();
}

void AgentMetrics::request_done(std::string_view action, std::string_view outcome) {
  registry_.add("provision_agent_requests_total",
                {{"action", std::string(action)}, {"outcome", std::string(outcome)}});
}

void AgentMetrics::key_generated(keystore::KeyType type, std::chrono::duration<double> took,
                                 std::string_view path) {
  registry_.observe(
      "provision_agent_key_generation_seconds",
      {{"key_type", std::string(keystore::to_string(type))}, {"path", std::string(path)}},
      took.count());
}

void AgentMetrics::collect() {
  auto& r = registry_;
  const auto sample = [](const auto& source) { return source ? source() : decltype(source()){}; };
  r.set("provision_agent_queue_depth", as_number(sample(sources_.queue_depth)));
  r.set("provision_agent_spool_depth", as_number(sample(sources_.spool_depth)));
  r.set("provision_agent_broker_connected", sample(sources_.connected) ? 1 : 0);
  const mqtt::Session::Counters session = sample(sources_.session);
  r.set("provision_agent_broker_reconnects_total",
        static_cast<double>(session.connections > 0 ? session.connections - 1 : 0));
  r.set("provision_agent_sessions_lost_total", static_cast<double>(session.sessions_lost));
  std::vector<std::pair<metrics::Labels, double>> keys;
  for (const auto& [type, count] : sample(sources_.keys_by_type))
    keys.push_back({{{"key_type", type}}, as_number(count)});
  r.replace("provision_agent_keys", keys);
  r.set("provision_agent_keys_due_rotation", as_number(sample(sources_.keys_due)));
  r.set("provision_agent_audit_sequence", static_cast<double>(sample(sources_.audit_sequence)));
  const KeyPoolState pool = sample(sources_.key_pool);
  r.set("provision_agent_key_pool_target", as_number(pool.target));
  r.set("provision_agent_key_pool_keys", as_number(pool.held));
  r.set("provision_agent_key_pool_hits_total", static_cast<double>(pool.hits));
  r.set("provision_agent_key_pool_misses_total", static_cast<double>(pool.misses));
  r.set("provision_agent_key_index_rescans_total",
        static_cast<double>(sample(sources_.index_rescans)));
}

std::optional<std::string> AgentMetrics::status_due(std::chrono::steady_clock::time_point now,
                                                    std::uint64_t announcements) {
  if (status_at_ && now - *status_at_ < status_interval_) return std::nullopt;
  collect();
  const std::uint64_t version = registry_.version();
  if (status_at_ && version == status_version_ && announcements == status_announcements_)
    return std::nullopt;
  status_at_ = now;
  status_version_ = version;
  status_announcements_ = announcements;
  return registry_.json();
}

std::string AgentMetrics::status_now(std::chrono::steady_clock::time_point now,
                                     std::uint64_t announcements) {
  collect();
  status_at_ = now;
  status_version_ = registry_.version();
  status_announcements_ = announcements;
  return registry_.json();
}

}  // namespace pa
