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

#include "keystore/secret.hpp"
#include "protocol/protocol.hpp"

namespace pa {

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

  // A decrypted request's text is wiped when the request goes (SPEC section 4).
  Request() = default;
  Request(const Request&) = default;
  Request(Request&&) noexcept = default;
  Request& operator=(const Request&) = default;
  Request& operator=(Request&&) noexcept = default;
  ~Request() {
    if (encrypted) keystore::Secret::wipe(json);
  }
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

}  // namespace pa
