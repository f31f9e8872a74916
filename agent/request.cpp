#include "request.hpp"

#include <fmt/format.h>
#include <rapidjson/document.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <cstdio>
#include <ctime>

#include "envelope.hpp"
#include "keystore/identifier.hpp"
#include "keystore/key_pair.hpp"

namespace pa {
namespace {

std::string to_json_text(const rapidjson::Value& value) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  value.Accept(writer);
  return std::string(buffer.GetString(), buffer.GetSize());
}

std::string string_of(const rapidjson::Value& value) {
  return std::string(value.GetString(), value.GetStringLength());
}

// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm); avoids
// timegm's dependence on the TZ database.
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

}  // namespace

const char* to_string(ErrorCode code) noexcept {
  switch (code) {
    case ErrorCode::invalid_json:
      return "invalid_json";
    case ErrorCode::invalid_request:
      return "invalid_request";
    case ErrorCode::invalid_device_id:
      return "invalid_device_id";
    case ErrorCode::invalid_user_id:
      return "invalid_user_id";
    case ErrorCode::device_mismatch:
      return "device_mismatch";
    case ErrorCode::unknown_action:
      return "unknown_action";
    case ErrorCode::payload_too_large:
      return "payload_too_large";
    case ErrorCode::decrypt_failed:
      return "decrypt_failed";
    case ErrorCode::e2ee_required:
      return "e2ee_required";
    case ErrorCode::unauthorized:
      return "unauthorized";
    case ErrorCode::replay:
      return "replay";
    case ErrorCode::not_found:
      return "not_found";
    case ErrorCode::busy:
      return "busy";
    case ErrorCode::keygen_failed:
      return "keygen_failed";
    case ErrorCode::storage_failed:
      return "storage_failed";
    case ErrorCode::plugin_failed:
      return "plugin_failed";
  }
  return "plugin_failed";
}

std::optional<std::pair<std::string, TopicKind>> parse_request_topic(std::string_view topic,
                                                                     std::string_view base) {
  if (topic.size() <= base.size() + 1 || topic.substr(0, base.size()) != base ||
      topic[base.size()] != '/')
    return std::nullopt;
  std::string_view rest = topic.substr(base.size() + 1);
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::string_view device = rest.substr(0, slash);
  std::string_view leaf = rest.substr(slash + 1);
  TopicKind kind;
  if (leaf == "request")
    kind = TopicKind::request;
  else if (leaf == "update")
    kind = TopicKind::update;
  else if (leaf == "delete")
    kind = TopicKind::remove;
  else
    return std::nullopt;
  return std::make_pair(std::string(device), kind);
}

const char* topic_action(TopicKind kind) {
  switch (kind) {
    case TopicKind::update:
      return kActionUpdate;
    case TopicKind::remove:
      return kActionDelete;
    case TopicKind::request:
      break;
  }
  return kActionGenerate;
}

std::string canonical_action(std::string_view action) {
  if (action == "request" || action == "generate") return kActionGenerate;
  if (action == "rotate") return kActionUpdate;
  return std::string(action);
}

std::optional<Envelope> parse_envelope(std::string_view payload) {
  rapidjson::Document doc;
  doc.Parse(payload.data(), payload.size());
  if (doc.HasParseError() || !doc.IsObject()) return std::nullopt;
  // The original agent's test: all four fields present means "encrypted".
  for (const char* field : {"session_key", "nonce", "tag", "ciphertext"})
    if (!doc.HasMember(field)) return std::nullopt;
  Envelope envelope;
  auto text = [&](const char* field) -> std::optional<std::string> {
    const auto& value = doc[field];
    if (!value.IsString()) return std::nullopt;
    return string_of(value);
  };
  auto session_key = text("session_key"), nonce = text("nonce"), tag = text("tag"),
       ciphertext = text("ciphertext");
  // A field of the wrong type still marks an envelope: it must fail to decrypt, never be
  // read as plaintext. Empty strings do that.
  envelope.session_key = session_key.value_or("");
  envelope.nonce = nonce.value_or("");
  envelope.tag = tag.value_or("");
  envelope.ciphertext = ciphertext.value_or("");
  if (doc.HasMember("mode")) envelope.mode = doc["mode"].IsString() ? string_of(doc["mode"]) : "?";
  if (doc.HasMember("signature") && doc["signature"].IsString())
    envelope.signature = string_of(doc["signature"]);
  return envelope;
}

std::optional<std::string> peek_request_id(std::string_view payload) {
  rapidjson::Document doc;
  doc.Parse(payload.data(), payload.size());
  if (doc.HasParseError() || !doc.IsObject() || parse_envelope(payload)) return std::nullopt;
  auto it = doc.FindMember("request_id");
  if (it == doc.MemberEnd() || !it->value.IsString()) return std::nullopt;
  return string_of(it->value);
}

Decoded decode_request(const InboundMessage& message, std::size_t max_payload,
                       const Decryptor& decrypt) {
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
    out.request_id = peek_request_id(message.payload);
    return fail(ErrorCode::invalid_device_id,
                "device id must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter "
                "or digit");
  }

  // An empty payload means "no fields" (mosquitto_pub -n on the update/delete topics).
  std::string plaintext = message.payload.empty() ? std::string("{}") : message.payload;
  // Decrypted plaintext is wiped when decoding ends, whichever way it ends (SPEC section 4).
  struct WipeOnReturn {
    std::string& text;
    bool armed = false;
    ~WipeOnReturn() {
      if (armed) e2ee::wipe(text);
    }
  } wipe_plaintext{plaintext};
  if (auto envelope = parse_envelope(plaintext)) {
    out.encrypted = true;
    wipe_plaintext.armed = true;
    auto decrypted = decrypt(*envelope, message.device_id);
    if (auto* error = std::get_if<RequestError>(&decrypted)) {
      out.error = std::move(*error);
      return out;
    }
    plaintext = std::move(std::get<std::string>(decrypted));
  }

  rapidjson::Document doc;
  doc.Parse(plaintext.data(), plaintext.size());
  if (doc.HasParseError())
    return fail(ErrorCode::invalid_json,
                out.encrypted ? "decrypted payload is not JSON" : "payload is not JSON");
  if (!doc.IsObject()) return fail(ErrorCode::invalid_request, "request must be a JSON object");

  // request_id first, so every later error can echo it.
  std::optional<std::string> request_id;
  if (auto it = doc.FindMember("request_id"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (it->value.IsString())
      request_id = string_of(it->value);
    else if (it->value.IsInt64())
      request_id = std::to_string(it->value.GetInt64());
    else
      return fail(ErrorCode::invalid_request, "request_id must be a string");
    if (request_id->size() > 256) return fail(ErrorCode::invalid_request, "request_id too long");
    out.request_id = request_id;
  }

  std::optional<std::string> user_id;
  if (auto it = doc.FindMember("user_id"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (it->value.IsString())
      user_id = string_of(it->value);
    else if (it->value.IsInt64())
      user_id = std::to_string(it->value.GetInt64());
    else
      return fail(ErrorCode::invalid_user_id, "user_id must be a string or an integer");
    if (!keystore::is_valid_identifier(*user_id))
      return fail(ErrorCode::invalid_user_id,
                  "user id must be 1-128 characters of A-Z a-z 0-9 . _ - starting with a letter "
                  "or digit");
    out.user_id = user_id;
  }

  std::string action = topic_action(message.kind);
  if (auto it = doc.FindMember("action"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsString()) return fail(ErrorCode::invalid_request, "action must be a string");
    std::string named = canonical_action(string_of(it->value));
    if (message.kind != TopicKind::request && named != action)
      return fail(
          ErrorCode::invalid_request,
          fmt::format("action \"{}\" does not match the {} topic", string_of(it->value), action));
    if (named.empty()) return fail(ErrorCode::invalid_request, "action must not be empty");
    action = std::move(named);
  }
  out.action = action;

  if (auto it = doc.FindMember("device_id"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsString() || string_of(it->value) != message.device_id)
      return fail(ErrorCode::device_mismatch,
                  "device_id in the payload differs from the device in the topic");
  }

  Request request;
  request.device_id = message.device_id;
  request.user_id = user_id;
  request.action = action;
  request.request_id = request_id;
  request.encrypted = out.encrypted;

  if (auto it = doc.FindMember("nonce"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsString()) return fail(ErrorCode::invalid_request, "nonce must be a string");
    request.nonce = string_of(it->value);
  }
  if (auto it = doc.FindMember("ts"); it != doc.MemberEnd() && !it->value.IsNull()) {
    if (!it->value.IsInt64()) return fail(ErrorCode::invalid_request, "ts must be an integer");
    request.ts = it->value.GetInt64();
  } else if (auto ts = doc.FindMember("timestamp"); ts != doc.MemberEnd() && !ts->value.IsNull()) {
    std::optional<std::int64_t> seconds;
    if (ts->value.IsString()) seconds = parse_rfc3339(string_of(ts->value));
    if (!seconds)
      return fail(ErrorCode::invalid_request, "timestamp must be an RFC 3339 date and time");
    request.ts = seconds;
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
  request.json = to_json_text(doc);
  out.request = std::move(request);
  return out;
}

std::optional<std::int64_t> parse_rfc3339(std::string_view text) {
  // YYYY-MM-DD('T'|'t'|' ')HH:MM:SS[.fraction](Z|z|+HH:MM|-HH:MM)
  auto digits = [&](std::size_t pos, std::size_t count, int& value) {
    if (pos + count > text.size()) return false;
    value = 0;
    for (std::size_t i = pos; i < pos + count; ++i) {
      if (text[i] < '0' || text[i] > '9') return false;
      value = value * 10 + (text[i] - '0');
    }
    return true;
  };
  int year, month, day, hour, minute, second;
  if (!digits(0, 4, year) || text.size() < 20 || text[4] != '-' || !digits(5, 2, month) ||
      text[7] != '-' || !digits(8, 2, day) ||
      (text[10] != 'T' && text[10] != 't' && text[10] != ' ') || !digits(11, 2, hour) ||
      text[13] != ':' || !digits(14, 2, minute) || text[16] != ':' || !digits(17, 2, second))
    return std::nullopt;
  if (month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60)
    return std::nullopt;
  std::size_t pos = 19;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    const std::size_t start = pos;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') ++pos;
    if (pos == start) return std::nullopt;
  }
  std::int64_t offset = 0;
  if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
    ++pos;
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    int oh, om;
    if (!digits(pos + 1, 2, oh) || pos + 3 >= text.size() || text[pos + 3] != ':' ||
        !digits(pos + 4, 2, om) || oh > 23 || om > 59)
      return std::nullopt;
    offset = (oh * 3600 + om * 60) * (text[pos] == '+' ? 1 : -1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != text.size()) return std::nullopt;
  return days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) * 86400 +
         hour * 3600 + minute * 60 + second - offset;
}

std::string format_rfc3339(std::int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

}  // namespace pa
