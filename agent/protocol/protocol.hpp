#pragma once
// The wire protocol's own facts (SPEC section 3), one home each: the error codes of responses,
// the request topics and what they mean, the actions the protocol itself names, every topic the
// agent subscribes to or publishes on, and the message as the broker hands it over.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace pa {

enum class ErrorCode {
  invalid_json,
  invalid_request,
  invalid_device_id,
  invalid_user_id,
  device_mismatch,
  unknown_action,
  payload_too_large,
  decrypt_failed,
  e2ee_required,
  unauthorized,
  replay,
  not_found,
  busy,
  quota_exceeded,
  expired,
  keygen_failed,
  storage_failed,
  plugin_failed,
};
// The SPEC section 3.3 name of a code, and back (nullopt for a name that is none of them).
const char* to_string(ErrorCode code) noexcept;
std::optional<ErrorCode> parse_error_code(std::string_view name) noexcept;

struct RequestError {
  ErrorCode code;
  std::string message;
};

// Which subscription a message came in on.
enum class TopicKind { request, update, remove };

// A message as the network thread hands it to a worker.
struct InboundMessage {
  std::string topic;
  std::string device_id;  // the topic's D, not yet validated
  TopicKind kind = TopicKind::request;
  std::string payload;
  std::size_t payload_bytes = 0;  // the payload's size as received (over the limit: not copied)
  std::optional<std::string> response_topic;  // MQTT 5 Response Topic (already vetted)
  std::string correlation_data;               // MQTT 5 Correlation Data
  std::uint64_t seq = 0;                      // intake spool sequence number (arrival order)
  std::int64_t expires_at_ms = 0;             // MQTT 5 Message Expiry as Unix milliseconds; 0: none
  std::string traceparent;  // MQTT 5 user property, W3C form checked; echoed and logged (SPEC 3.6)
};

// "P/D/request" | "P/D/update" | "P/D/delete" -> (D, kind); nullopt for any other topic.
std::optional<std::pair<std::string, TopicKind>> parse_request_topic(std::string_view topic,
                                                                     std::string_view base);

// The actions the wire protocol itself names (SPEC section 3): a request without "action" asks
// for the default one, and the update and delete topics name theirs. Which plugin serves them,
// their aliases and properties are the plugins' to say.
inline constexpr const char* kActionGenerate = "generate_and_publish_key";
inline constexpr const char* kActionUpdate = "update";
inline constexpr const char* kActionDelete = "delete";

// The action a topic names: update, delete, or the default generate_and_publish_key.
const char* topic_action(TopicKind kind);

// Every topic of SPEC section 3, built in one place. `base` is MQTT_PROVISION_TOPIC_BASE (P),
// `keys_base` MQTT_KEYS_TOPIC_BASE (K).
namespace topics {
std::string request_filter(std::string_view base, TopicKind kind);     // P/+/request|update|delete
std::string request(std::string_view base, std::string_view device);   // P/D/request
std::string response(std::string_view base, std::string_view device);  // P/D/response
std::string public_key(std::string_view keys_base, std::string_view device);  // K/D/public
std::string agent_status(std::string_view base, std::string_view client_id);  // P/agents/C/status
std::string agent_status_filter(std::string_view base);                       // P/agents/+/status
std::string agent_audit(std::string_view base, std::string_view client_id);   // P/agents/C/audit
std::string agents_prefix(std::string_view base);                             // P/agents/
std::string replay_blocked(std::string_view base, std::string_view device);
std::string rotation_due(std::string_view base, std::string_view device);
}  // namespace topics

}  // namespace pa
