#pragma once
// Request decoding (SPEC sections 3.1 and 3.3): topic, size, JSON, envelope, fields, identifiers.
// Pure functions with no I/O beyond the decryptor they are given, so every error code is
// unit-testable.
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

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

// Turns an action or alias a request names into the canonical name (the plugins' table); an
// unknown name is returned unchanged (it is answered unknown_action later).
using ActionNames = std::function<std::string(std::string_view)>;

// The fields of an encrypted envelope (SPEC section 4), still base64 encoded.
struct Envelope {
  std::string session_key;
  std::string nonce;
  std::string tag;
  std::string ciphertext;
  std::string mode = "EAX";
  std::optional<std::string> signature;
};

// Decrypts an envelope addressed to `device_id`; returns the plaintext or a RequestError
// (decrypt_failed / unauthorized). Provided by the agent (SPEC section 4).
using Decryptor =
    std::function<std::variant<std::string, RequestError>(const Envelope&, const std::string&)>;

struct Request {
  std::string device_id;
  std::optional<std::string> user_id;
  std::string action;  // canonical
  std::optional<std::string> request_id;
  std::optional<std::string> nonce;
  std::optional<std::int64_t> ts;     // from "ts" or "timestamp", Unix seconds (rounded down)
  std::optional<std::int64_t> ts_us;  // the same in microseconds: fractions count (SPEC 3.1)
  bool force = false;
  std::optional<std::string> key_type;
  bool encrypted = false;
  // Which binding fields the (decrypted) payload named itself: a signed request must name
  // device_id, action, request_id and ts (SPEC section 4).
  bool names_device = false;
  bool names_action = false;
  // Hex SHA-256 of what the request asks for: device, user, action, key type, force and every
  // other field, but not request_id, nonce, ts or timestamp (SPEC 3.4: a retry's content).
  std::string content_digest;
  std::string json;  // the decoded request object (plaintext) as JSON text
};

// The outcome of decoding: a request, or an error plus what could be read for the response.
struct Decoded {
  std::optional<Request> request;
  std::optional<RequestError> error;
  // Best-effort fields for an error response (valid identifiers only).
  std::optional<std::string> request_id;
  std::optional<std::string> user_id;
  std::string action;
  bool encrypted = false;
};

// Whether a JSON object text is an envelope, and its fields; nullopt otherwise.
std::optional<Envelope> parse_envelope(std::string_view payload);

// Decodes one message. `max_payload` bytes at most. A message that looks like an envelope is
// decrypted with `decrypt` and never read as plaintext. `canonical` resolves action aliases.
Decoded decode_request(const InboundMessage& message, std::size_t max_payload,
                       const Decryptor& decrypt, const ActionNames& canonical);

// The request_id of a plaintext payload within `max_payload`, for replies to requests that are
// not decoded (an invalid device, a full queue); nullopt for envelopes and anything unreadable.
std::optional<std::string> peek_request_id(std::string_view payload, std::size_t max_payload);

// RFC 3339 ("2026-11-23T10:00:00Z", offsets and fractions allowed; without an offset the time
// is UTC, as the original server's utcnow().isoformat() means it) -> Unix microseconds.
std::optional<std::int64_t> parse_rfc3339_us(std::string_view text);
// The same in Unix seconds, rounded down.
std::optional<std::int64_t> parse_rfc3339(std::string_view text);

// Unix seconds -> "2026-11-23T10:00:00Z".
std::string format_rfc3339(std::int64_t unix_seconds);

}  // namespace pa
