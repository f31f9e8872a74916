#pragma once
// What the agent counts (SPEC section 8, issue 13), declared in one place: requests by action and
// outcome, key generation time by key type, queue and spool depth, the broker connection,
// reconnects and lost sessions, keys by type, keys due for rotation, the audit sequence and the
// key pool. Counted as things happen (request_done, key_generated) or sampled from their owners
// just before each write (Sources). Written to PROVISION_METRICS_FILE and put in the retained
// status at most once a minute.
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "dispatch/key_pool.hpp"
#include "keystore/key_pair.hpp"
#include "metrics/metrics.hpp"
#include "mqtt/session.hpp"

namespace pa {

class AgentMetrics {
 public:
  // Where the sampled values come from; any may be unset (then 0). Called on the metrics
  // writer's thread and the event loop: each must be thread-safe.
  struct Sources {
    std::function<std::size_t()> queue_depth;
    std::function<std::size_t()> spool_depth;
    std::function<bool()> connected;
    std::function<mqtt::Session::Counters()> session;
    std::function<std::map<std::string, std::size_t>()> keys_by_type;
    std::function<std::size_t()> keys_due;
    std::function<std::uint64_t()> audit_sequence;
    std::function<KeyPoolState()> key_pool;
    std::function<std::uint64_t()> index_rescans;
  };

  // `status_interval`: the least time between two status refreshes (a minute; tests shorten it).
  AgentMetrics(const std::string& agent_id, std::optional<std::string> metrics_file,
               Sources sources, std::chrono::steady_clock::duration status_interval);
  ~AgentMetrics();

  // A request answered: its action (as served: names the plugins do not serve count as "other",
  // so a client cannot grow the label set) and outcome ("ok", an error code, or "duplicate").
  void request_done(std::string_view action, std::string_view outcome);
  // A pair generated, on the request's path ("request") or ahead ("pool").
  void key_generated(keystore::KeyType type, std::chrono::duration<double> took,
                     std::string_view path);

  // The counters as a JSON object for the retained status, when a refresh is due: at most once
  // a status interval, and only when a counter moved or the agent announced itself again since
  // the last one (`announcements`: online statuses the session published).
  std::optional<std::string> status_due(std::chrono::steady_clock::time_point now,
                                        std::uint64_t announcements);
  // The counters now, for a status the session publishes anyway (after subscribing, on a
  // conflict): the next refresh is then due a status interval later.
  std::string status_now(std::chrono::steady_clock::time_point now, std::uint64_t announcements);

  // PROVISION_METRICS_FILE is written between these two calls (none without a file): from when
  // every source is in place until before any goes away.
  void start_writing();
  void stop_writing();  // one last write

  metrics::Registry& registry() { return registry_; }
  // Samples the Sources into the registry.
  void collect();

 private:
  metrics::Registry registry_;
  Sources sources_;
  const std::chrono::steady_clock::duration status_interval_;
  std::optional<std::chrono::steady_clock::time_point> status_at_;
  std::uint64_t status_version_ = 0;
  std::uint64_t status_announcements_ = 0;
  const std::optional<std::string> metrics_file_;
  std::mutex file_mutex_;
  std::unique_ptr<metrics::TextfileWriter> file_;
};

}  // namespace pa
