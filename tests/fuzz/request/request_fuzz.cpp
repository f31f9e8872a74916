// decode_request (SPEC 3.1, 3.3, 4) as the agent calls it for a message from the broker, with the
// plugins' action aliases.
//
// Input: the topic on the first line, the payload after it. A topic line starting with "EAX " or
// "GCM " seals the payload to the test key in that mode first, so the fuzzer also drives the
// decrypted-plaintext path; decoding the sealed message must then agree with decoding the
// plaintext. Envelopes written by the fuzzer itself go through open_envelope with the test key.
#include <rapidjson/document.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "base/strict_json.hpp"
#include "fuzz_support.hpp"
#include "intake/envelope.hpp"
#include "intake/request.hpp"
#include "keystore/identifier.hpp"
#include "keystore/key_pair.hpp"

namespace {

using namespace pa;
using fuzz::as_text;

constexpr std::size_t kMaxPayload = 65536;  // PROVISION_MAX_PAYLOAD's default
constexpr std::string_view kBase = "provision";

std::string describe(const Decoded& decoded) {
  if (decoded.error)
    return std::string("error ") + to_string(decoded.error->code) + ": " + decoded.error->message;
  if (decoded.request) return "request " + decoded.request->json;
  return "neither a request nor an error";
}

// What the agent hands to plugins obeys the rules it enforces on what arrives.
bool is_strict_object_json(const std::string& text) {
  rapidjson::Document doc;
  return parse_json_strictly(text, doc).fault == JsonFault::none && doc.IsObject();
}

bool is_lower_hex_sha256(const std::string& text) {
  return text.size() == 64 && text.find_first_not_of("0123456789abcdef") == std::string::npos;
}

std::int64_t floor_seconds(std::int64_t microseconds) {
  return microseconds / 1000000 - (microseconds % 1000000 < 0 ? 1 : 0);
}

// What every decoding promises, whatever the input.
void check_decoded(const InboundMessage& message, const Decoded& decoded) {
  PA_FUZZ_CHECK(decoded.request.has_value() != decoded.error.has_value(), describe(decoded));
  if (decoded.user_id)
    PA_FUZZ_CHECK(keystore::is_valid_identifier(*decoded.user_id), *decoded.user_id);
  PA_FUZZ_CHECK(!decoded.action.empty(), describe(decoded));
  if (decoded.error) {
    switch (decoded.error->code) {
      case ErrorCode::invalid_json:
      case ErrorCode::invalid_request:
      case ErrorCode::invalid_device_id:
      case ErrorCode::invalid_user_id:
      case ErrorCode::device_mismatch:
      case ErrorCode::payload_too_large:
      case ErrorCode::decrypt_failed:
        break;
      default:
        PA_FUZZ_CHECK(false, describe(decoded));
    }
    PA_FUZZ_CHECK(!decoded.error->message.empty(), describe(decoded));
    return;
  }
  const Request& request = *decoded.request;
  // The device is the topic's and a valid identifier; so is the user.
  PA_FUZZ_CHECK(request.device_id == message.device_id, request.device_id);
  PA_FUZZ_CHECK(keystore::is_valid_identifier(request.device_id), request.device_id);
  if (request.user_id)
    PA_FUZZ_CHECK(keystore::is_valid_identifier(*request.user_id), *request.user_id);
  PA_FUZZ_CHECK(request.user_id == decoded.user_id, describe(decoded));
  PA_FUZZ_CHECK(request.request_id == decoded.request_id, describe(decoded));
  if (request.request_id)
    PA_FUZZ_CHECK(
        request.request_id->size() <= 256 && request.request_id->find('\0') == std::string::npos,
        *request.request_id);
  // ts and timestamp give both forms, seconds the microseconds rounded down; within years 1 to
  // 9999, so the ledger's arithmetic on them cannot overflow.
  PA_FUZZ_CHECK(request.ts.has_value() == request.ts_us.has_value(), describe(decoded));
  if (request.ts) {
    PA_FUZZ_CHECK(*request.ts >= -62135596800 && *request.ts <= 253402300799,
                  std::to_string(*request.ts));
    PA_FUZZ_CHECK(floor_seconds(*request.ts_us) == *request.ts,
                  std::to_string(*request.ts) + " / " + std::to_string(*request.ts_us));
  }
  PA_FUZZ_CHECK(is_lower_hex_sha256(request.content_digest), request.content_digest);
  // The action is canonical (no alias of the plugins' table), and the topic's own on
  // update/delete.
  PA_FUZZ_CHECK(!request.action.empty(), describe(decoded));
  PA_FUZZ_CHECK(request.action == decoded.action, describe(decoded));
  PA_FUZZ_CHECK(fuzz::action_alias(request.action) == request.action, request.action);
  if (message.kind != TopicKind::request)
    PA_FUZZ_CHECK(request.action == topic_action(message.kind), request.action);
  if (request.key_type)
    PA_FUZZ_CHECK(keystore::parse_key_type(*request.key_type).has_value(), *request.key_type);
  PA_FUZZ_CHECK(request.encrypted == decoded.encrypted, describe(decoded));
  PA_FUZZ_CHECK(is_strict_object_json(request.json), request.json);
}

bool same_request(const Request& a, const Request& b) {
  return a.device_id == b.device_id && a.user_id == b.user_id && a.action == b.action &&
         a.request_id == b.request_id && a.nonce == b.nonce && a.ts == b.ts && a.ts_us == b.ts_us &&
         a.force == b.force && a.key_type == b.key_type && a.names_device == b.names_device &&
         a.names_action == b.names_action && a.content_digest == b.content_digest &&
         a.json == b.json;
}

// Two decodings of the same request content agree on everything but `encrypted`.
void check_same_outcome(const Decoded& a, const Decoded& b) {
  PA_FUZZ_CHECK(a.error.has_value() == b.error.has_value(), describe(a) + " / " + describe(b));
  if (a.error) {
    PA_FUZZ_CHECK(a.error->code == b.error->code, describe(a) + " / " + describe(b));
  } else {
    PA_FUZZ_CHECK(same_request(*a.request, *b.request), describe(a) + " / " + describe(b));
  }
  PA_FUZZ_CHECK(a.request_id == b.request_id && a.user_id == b.user_id && a.action == b.action,
                describe(a) + " / " + describe(b));
}

Decoded decode(const InboundMessage& message) {
  static const Decryptor decryptor = fuzz::test_key_decryptor();
  Decoded decoded = decode_request(message, kMaxPayload, decryptor, fuzz::action_alias);
  check_decoded(message, decoded);
  return decoded;
}

// The decoded JSON is a fixed point: decoding it again as plaintext gives the same request.
void check_fixed_point(const InboundMessage& message, const Decoded& decoded) {
  if (decoded.error || parse_envelope(decoded.request->json)) return;
  InboundMessage again = message;
  again.payload = decoded.request->json;
  check_same_outcome(decoded, decode(again));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input = as_text(data, size);
  const std::size_t newline = input.find('\n');
  std::string_view topic = input.substr(0, newline);
  const std::string_view payload =
      newline == std::string_view::npos ? std::string_view() : input.substr(newline + 1);
  std::string seal_mode;
  if (topic.substr(0, 4) == "EAX " || topic.substr(0, 4) == "GCM ") {
    seal_mode = std::string(topic.substr(0, 3));
    topic.remove_prefix(4);
  }

  // Only messages on the subscribed topics reach decoding.
  const auto parsed = parse_request_topic(topic, kBase);
  if (!parsed) return 0;
  InboundMessage message;
  message.topic = std::string(topic);
  message.device_id = parsed->first;
  message.kind = parsed->second;
  message.payload = std::string(payload);

  if (seal_mode.empty()) {
    const Decoded decoded = decode(message);
    if (!decoded.error)
      PA_FUZZ_CHECK(decoded.encrypted == parse_envelope(message.payload).has_value(),
                    message.payload);
    check_fixed_point(message, decoded);
    return 0;
  }

  e2ee::SealOptions options;
  options.mode = seal_mode;
  InboundMessage sealed = message;
  sealed.payload =
      e2ee::envelope_json(e2ee::seal_envelope(payload, fuzz::test_public_pem(), options));
  const Decoded from_envelope = decode(sealed);
  check_fixed_point(message, from_envelope);
  if (!keystore::is_valid_identifier(message.device_id)) return 0;
  PA_FUZZ_CHECK(from_envelope.encrypted, describe(from_envelope));
  // Encryption changes nothing but the flag (an empty payload means "{}" only in clear, and an
  // envelope in clear would be decrypted instead of read).
  if (!payload.empty() && !parse_envelope(payload))
    check_same_outcome(from_envelope, decode(message));
  return 0;
}
