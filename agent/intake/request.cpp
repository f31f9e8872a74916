#include "intake/request.hpp"

#include <fmt/format.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cryptopp/hex.h>
#include <cryptopp/sha.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <vector>

#include "base/strict_json.hpp"
#include "base/text.hpp"
#include "base/time.hpp"
#include "intake/envelope.hpp"
#include "keystore/identifier.hpp"
#include "keystore/key_pair.hpp"

namespace pa {
namespace {

std::string string_of(const rapidjson::Value& value) {
  return std::string(value.GetString(), value.GetStringLength());
}

}  // namespace

namespace {

// The original agent's test: all four fields present means "encrypted". A field of the wrong
// type still marks an envelope: it must fail to decrypt, never be read as plaintext, and empty
// strings do that.
std::optional<Envelope> envelope_from(const rapidjson::Value& doc) {
  if (!doc.IsObject()) return std::nullopt;
  for (const char* field : {"session_key", "nonce", "tag", "ciphertext"})
    if (!doc.HasMember(field)) return std::nullopt;
  auto text = [&](const char* field) {
    const auto& value = doc[field];
    return value.IsString() ? string_of(value) : std::string();
  };
  Envelope envelope;
  envelope.session_key = text("session_key");
  envelope.nonce = text("nonce");
  envelope.tag = text("tag");
  envelope.ciphertext = text("ciphertext");
  if (doc.HasMember("mode")) envelope.mode = doc["mode"].IsString() ? string_of(doc["mode"]) : "?";
  if (doc.HasMember("signature") && doc["signature"].IsString())
    envelope.signature = string_of(doc["signature"]);
  return envelope;
}

ErrorCode code_of(JsonFault fault) {
  return fault == JsonFault::syntax ? ErrorCode::invalid_json : ErrorCode::invalid_request;
}

// Members that identify or time a request rather than say what it asks for; the rest is its
// content (SPEC 3.4). user_id, action, key_type and force are folded in normalised.
bool is_identity_member(std::string_view name) {
  return name == "request_id" || name == "nonce" || name == "ts" || name == "timestamp" ||
         name == "device_id" || name == "user_id" || name == "action" || name == "key_type" ||
         name == "force";
}

std::string content_digest(const Request& request, const rapidjson::Value& doc) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  writer.StartObject();
  auto put = [&](const char* name, std::string_view value) {
    writer.Key(name);
    writer.String(value.data(), static_cast<rapidjson::SizeType>(value.size()));
  };
  put("device", request.device_id);
  if (request.user_id) put("user", *request.user_id);
  put("action", request.action);
  if (request.key_type) put("key_type", *request.key_type);
  writer.Key("force");
  writer.Bool(request.force);
  // Member names are unique (strict parse), so sorting them gives one canonical order.
  std::vector<const rapidjson::Value::Member*> others;
  for (const auto& member : doc.GetObject())
    if (!is_identity_member(
            std::string_view(member.name.GetString(), member.name.GetStringLength())))
      others.push_back(&member);
  std::sort(others.begin(), others.end(), [](const auto* a, const auto* b) {
    return std::string_view(a->name.GetString(), a->name.GetStringLength()) <
           std::string_view(b->name.GetString(), b->name.GetStringLength());
  });
  writer.Key("fields");
  writer.StartObject();
  for (const auto* member : others) {
    writer.Key(member->name.GetString(), member->name.GetStringLength());
    member->value.Accept(writer);  // depth is bounded by the strict parse
  }
  writer.EndObject();
  writer.EndObject();

  CryptoPP::SHA256 hash;
  CryptoPP::byte sum[CryptoPP::SHA256::DIGESTSIZE];
  hash.CalculateDigest(sum, reinterpret_cast<const CryptoPP::byte*>(buffer.GetString()),
                       buffer.GetSize());
  std::string hex;
  CryptoPP::ArraySource(sum, sizeof sum, true,
                        new CryptoPP::HexEncoder(new CryptoPP::StringSink(hex), false));
  return hex;
}

constexpr std::size_t kMaxIdLength = 256;

}  // namespace

std::optional<Envelope> parse_envelope(std::string_view payload) {
  rapidjson::Document doc;
  if (parse_json_strictly(payload, doc).fault != JsonFault::none) return std::nullopt;
  return envelope_from(doc);
}

std::optional<std::string> peek_request_id(std::string_view payload, std::size_t max_payload) {
  if (payload.size() > max_payload) return std::nullopt;
  rapidjson::Document doc;
  if (parse_json_strictly(payload, doc).fault != JsonFault::none || !doc.IsObject() ||
      envelope_from(doc))
    return std::nullopt;
  auto it = doc.FindMember("request_id");
  if (it == doc.MemberEnd() || !it->value.IsString() || it->value.GetStringLength() > kMaxIdLength)
    return std::nullopt;
  return string_of(it->value);
}

Decoded decode_request(const InboundMessage& message, std::size_t max_payload,
                       const Decryptor& decrypt, const ActionNames& canonical) {
  Decoded out;
  out.action = topic_action(message.kind);
  auto fail = [&](ErrorCode code, std::string text) {
    out.error = RequestError{code, std::move(text)};
    return out;
  };

  if (message.payload.size() > max_payload)
    return fail(ErrorCode::payload_too_large,
                fmt::format("payload of {} bytes exceeds the limit of {} bytes",
                            message.payload.size(), max_payload));
  if (!keystore::is_valid_identifier(message.device_id)) {
    // No key lookup or decryption for an invalid device; a plaintext request_id is still echoed.
    out.request_id = peek_request_id(message.payload, max_payload);
    return fail(ErrorCode::invalid_device_id,
                "device id must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter "
                "or digit");
  }
  if (message.payload.empty())
    return fail(ErrorCode::invalid_json, "payload is empty; a request is a JSON object");

  rapidjson::Document doc;
  if (const JsonCheck check = parse_json_strictly(message.payload, doc);
      check.fault != JsonFault::none)
    return fail(code_of(check.fault), fmt::format("payload is not valid: {}", check.message));

  // Decrypted plaintext is wiped when decoding ends, whichever way it ends (SPEC section 4).
  keystore::Secret plaintext;
  if (auto envelope = envelope_from(doc)) {
    out.encrypted = true;
    auto decrypted = decrypt(*envelope, message.device_id);
    if (auto* error = std::get_if<RequestError>(&decrypted)) {
      out.error = std::move(*error);
      return out;
    }
    plaintext = keystore::Secret::take(std::move(std::get<std::string>(decrypted)));
    if (const JsonCheck check = parse_json_strictly(plaintext.view(), doc);
        check.fault != JsonFault::none)
      return fail(code_of(check.fault),
                  fmt::format("decrypted payload is not valid: {}", check.message));
  }
  if (!doc.IsObject()) return fail(ErrorCode::invalid_request, "request must be a JSON object");

  // request_id first, so every later error can echo it.
  std::optional<std::string> request_id;
  if (auto it = doc.FindMember("request_id"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsString())
      return fail(ErrorCode::invalid_request, "request_id must be a string");
    if (it->value.GetStringLength() > kMaxIdLength)
      return fail(ErrorCode::invalid_request,
                  fmt::format("request_id is longer than {} bytes", kMaxIdLength));
    request_id = string_of(it->value);
    // Plugins get it as a C string: one with a NUL in it would read differently there.
    if (request_id->find('\0') != std::string::npos) {
      request_id.reset();
      return fail(ErrorCode::invalid_request, "request_id must not contain NUL characters");
    }
    out.request_id = request_id;
  }

  // "" and null mean no user, as the original agent read them.
  std::optional<std::string> user_id;
  if (auto it = doc.FindMember("user_id"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (it->value.IsString())
      user_id = string_of(it->value);
    else if (it->value.IsInt64())
      user_id = std::to_string(it->value.GetInt64());
    else
      return fail(ErrorCode::invalid_user_id, "user_id must be a string or an integer");
    if (user_id->empty()) {
      user_id.reset();
    } else if (!keystore::is_valid_identifier(*user_id)) {
      return fail(ErrorCode::invalid_user_id,
                  "user id must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter "
                  "or digit");
    }
    out.user_id = user_id;
  }

  Request request;
  std::string action = topic_action(message.kind);
  if (auto it = doc.FindMember("action"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsString()) return fail(ErrorCode::invalid_request, "action must be a string");
    std::string named = canonical ? canonical(string_of(it->value)) : string_of(it->value);
    if (named.empty()) return fail(ErrorCode::invalid_request, "action must not be empty");
    if (message.kind != TopicKind::request && named != action)
      return fail(ErrorCode::invalid_request,
                  fmt::format("action \"{}\" does not match the {} topic",
                              escape_controls(string_of(it->value)), action));
    action = std::move(named);
    request.names_action = true;
  }
  out.action = action;

  if (auto it = doc.FindMember("device_id"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsString() || string_of(it->value) != message.device_id)
      return fail(ErrorCode::device_mismatch,
                  "device_id in the payload differs from the device in the topic");
    request.names_device = true;
  }

  request.device_id = message.device_id;
  request.user_id = user_id;
  request.action = action;
  request.request_id = request_id;
  request.encrypted = out.encrypted;

  if (auto it = doc.FindMember("nonce"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsString()) return fail(ErrorCode::invalid_request, "nonce must be a string");
    if (it->value.GetStringLength() > kMaxIdLength)
      return fail(ErrorCode::invalid_request,
                  fmt::format("nonce is longer than {} bytes", kMaxIdLength));
    request.nonce = string_of(it->value);
  }
  if (auto it = doc.FindMember("ts"); it != doc.MemberEnd() && !it->value.IsNull()) {
    // Bounded so that microseconds fit in 64 bits: years 1 to 9999.
    constexpr std::int64_t kMaxSeconds = 253402300799;
    if (!it->value.IsInt64() || it->value.GetInt64() < -62135596800 ||
        it->value.GetInt64() > kMaxSeconds)
      return fail(ErrorCode::invalid_request, "ts must be an integer of Unix seconds");
    request.ts = it->value.GetInt64();
    request.ts_us = *request.ts * 1000000;
  } else if (auto ts = doc.FindMember("timestamp"); ts != doc.MemberEnd() && !ts->value.IsNull()) {
    std::optional<std::int64_t> micros;
    if (ts->value.IsString()) micros = parse_rfc3339_us(string_of(ts->value));
    if (!micros)
      return fail(ErrorCode::invalid_request,
                  "timestamp must be an RFC 3339 date and time (2026-11-23T10:00:00Z)");
    request.ts_us = micros;
    request.ts = parse_rfc3339(string_of(ts->value));
  }
  if (auto it = doc.FindMember("force"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsBool()) return fail(ErrorCode::invalid_request, "force must be a boolean");
    request.force = it->value.GetBool();
  }
  if (auto it = doc.FindMember("key_type"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsString() || !keystore::parse_key_type(string_of(it->value)))
      return fail(ErrorCode::invalid_request,
                  "key_type must be one of rsa-2048, rsa-3072, rsa-4096, ec-p256, ed25519");
    request.key_type = string_of(it->value);
  }
  request.content_digest = content_digest(request, doc);
  // The text exactly as validated (strict JSON: one value per member), not a re-serialisation:
  // numbers reach plugins as they were sent (SPEC 3.1, other fields "passed untouched").
  request.json = out.encrypted ? std::string(plaintext.view()) : message.payload;
  out.request = std::move(request);
  return out;
}

}  // namespace pa
