// Request decoding (SPEC sections 3.1 and 3.3): each error code the decoder answers, aliases,
// identifiers, timestamps, and that an envelope is never read as plaintext.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "base/time.hpp"
#include "intake/request.hpp"

namespace pa {
namespace {

InboundMessage message(std::string payload, std::string device = "pH01",
                       TopicKind kind = TopicKind::request) {
  InboundMessage m;
  m.topic = "provision/" + device + "/request";
  m.device_id = std::move(device);
  m.kind = kind;
  m.payload = std::move(payload);
  return m;
}

// A decryptor that must not be reached for plaintext, and fails every envelope.
int g_decrypt_calls = 0;
std::variant<std::string, RequestError> refuse(const Envelope&, const std::string&) {
  ++g_decrypt_calls;
  return RequestError{ErrorCode::decrypt_failed, "no key decrypts this envelope"};
}

// The alias table the plugins give (keygen's aliases): the decoder knows no action names.
std::string aliases(std::string_view name) {
  if (name == "request" || name == "generate") return kActionGenerate;
  if (name == "rotate") return kActionUpdate;
  return std::string(name);
}

Decoded decode(const InboundMessage& m, std::size_t max_payload = 65536) {
  return decode_request(m, max_payload, refuse, aliases);
}

ErrorCode error_of(const Decoded& d) {
  EXPECT_TRUE(d.error.has_value());
  EXPECT_FALSE(d.request.has_value());
  return d.error ? d.error->code : ErrorCode::plugin_failed;
}

TEST(RequestTopic, ParsesTheThreeSubscriptions) {
  auto request = parse_request_topic("provision/pH01/request", "provision");
  ASSERT_TRUE(request);
  EXPECT_EQ(request->first, "pH01");
  EXPECT_EQ(request->second, TopicKind::request);
  EXPECT_EQ(parse_request_topic("provision/pH01/update", "provision")->second, TopicKind::update);
  EXPECT_EQ(parse_request_topic("provision/pH01/delete", "provision")->second, TopicKind::remove);
  EXPECT_EQ(parse_request_topic("site/a/provision/x/request", "site/a/provision")->first, "x");
  EXPECT_FALSE(parse_request_topic("provision/pH01/response", "provision"));
  EXPECT_FALSE(parse_request_topic("provision/agents/id/status", "provision"));
  EXPECT_FALSE(parse_request_topic("keys/pH01/public", "provision"));
  EXPECT_FALSE(parse_request_topic("provisionx/pH01/request", "provision"));
}

TEST(RequestDecode, PlainRequestWithEveryField) {
  auto d = decode(message(
      R"({"device_id":"pH01","action":"generate","user_id":5,"request_id":"r-1","nonce":"n1",)"
      R"("ts":1795000000,"force":true,"key_type":"ec-p256","extra":{"kept":1}})"));
  ASSERT_TRUE(d.request) << d.error->message;
  const Request& r = *d.request;
  EXPECT_EQ(r.device_id, "pH01");
  EXPECT_EQ(r.action, kActionGenerate);  // alias resolved
  EXPECT_EQ(r.user_id, "5");             // integer user ids become strings
  EXPECT_EQ(r.request_id, "r-1");
  EXPECT_EQ(r.nonce, "n1");
  EXPECT_EQ(r.ts, 1795000000);
  EXPECT_TRUE(r.force);
  EXPECT_EQ(r.key_type, "ec-p256");
  EXPECT_FALSE(r.encrypted);
  EXPECT_NE(r.json.find(R"("extra":{"kept":1})"), std::string::npos);  // passed to plugins
  EXPECT_EQ(g_decrypt_calls, 0);
}

TEST(RequestDecode, DefaultsAndAliases) {
  EXPECT_EQ(decode(message("{}")).request->action, kActionGenerate);
  EXPECT_EQ(decode(message(R"({"action":"request"})")).request->action, kActionGenerate);
  EXPECT_EQ(decode(message(R"({"action":"rotate"})")).request->action, kActionUpdate);
  EXPECT_EQ(decode(message(R"({"action":"publish_key"})")).request->action, "publish_key");
  // Custom actions pass through for plugins such as exec; the dispatcher answers unknown_action.
  EXPECT_EQ(decode(message(R"({"action":"reboot_sensor"})")).request->action, "reboot_sensor");
  EXPECT_FALSE(decode(message(R"({"user_id":null})")).request->user_id);
}

TEST(RequestDecode, TopicNamesTheActionOnUpdateAndDelete) {
  EXPECT_EQ(decode(message("{}", "pH01", TopicKind::update)).request->action, kActionUpdate);
  EXPECT_EQ(decode(message("{}", "pH01", TopicKind::remove)).request->action, kActionDelete);
  EXPECT_EQ(decode(message(R"({"action":"rotate"})", "pH01", TopicKind::update)).request->action,
            kActionUpdate);
  auto d = decode(message(R"({"action":"delete","request_id":"r9"})", "pH01", TopicKind::update));
  EXPECT_EQ(error_of(d), ErrorCode::invalid_request);
  EXPECT_EQ(d.request_id, "r9");  // echoed even on error
}

TEST(RequestDecode, InvalidJson) {
  EXPECT_EQ(error_of(decode(message("{not json"))), ErrorCode::invalid_json);
  EXPECT_EQ(error_of(decode(message(R"({"device_id":"pH01")"))), ErrorCode::invalid_json);
}

TEST(RequestDecode, InvalidRequestShapesAndTypes) {
  for (const char* payload :
       {"[1,2]", "\"text\"", "42", R"({"action":7})", R"({"action":""})", R"({"force":"yes"})",
        R"({"ts":"soon"})", R"({"timestamp":"yesterday"})", R"({"key_type":"rsa-1024"})",
        R"({"request_id":{"a":1}})", R"({"nonce":5})"})
    EXPECT_EQ(error_of(decode(message(payload))), ErrorCode::invalid_request) << payload;
}

TEST(RequestDecode, InvalidDeviceIdFromTheTopic) {
  for (const std::string& device :
       std::vector<std::string>{"..", ".", "", "-x", ".hidden", std::string(129, 'a'),
                                std::string("p\xC3\xA9"), std::string("a b")})
    EXPECT_EQ(error_of(decode(message("{}", device))), ErrorCode::invalid_device_id) << device;
  EXPECT_TRUE(decode(message("{}", std::string(128, 'a'))).request);
}

TEST(RequestDecode, InvalidUserId) {
  for (const char* payload : {R"({"user_id":"../x"})", R"({"user_id":"a/b"})",
                              R"({"user_id":".."})", R"({"user_id":1.5})", R"({"user_id":true})",
                              R"({"user_id":"a\u0000b"})", R"({"user_id":["5"]})"})
    EXPECT_EQ(error_of(decode(message(payload))), ErrorCode::invalid_user_id) << payload;
}

TEST(RequestDecode, DeviceMismatch) {
  EXPECT_EQ(error_of(decode(message(R"({"device_id":"pH02"})"))), ErrorCode::device_mismatch);
  EXPECT_EQ(error_of(decode(message(R"({"device_id":7})"))), ErrorCode::device_mismatch);
  EXPECT_EQ(error_of(decode(message(R"({"device_id":"pH01\u0000"})"))), ErrorCode::device_mismatch);
}

TEST(RequestDecode, PayloadTooLarge) {
  const std::string big = R"({"pad":")" + std::string(2000, 'x') + R"("})";
  EXPECT_EQ(error_of(decode(message(big), 1024)), ErrorCode::payload_too_large);
  EXPECT_TRUE(decode(message(big), 4096).request);
}

TEST(RequestDecode, EnvelopeIsNeverReadAsPlaintext) {
  g_decrypt_calls = 0;
  // Looks like an envelope and also carries plaintext fields: the original agent would have
  // acted on "action":"delete"; here it must only be decrypted, and failing that, refused.
  auto d = decode(message(
      R"({"session_key":"AAAA","nonce":"AAAA","tag":"AAAA","ciphertext":"AAAA","action":"delete"})",
      "pH01", TopicKind::remove));
  EXPECT_EQ(error_of(d), ErrorCode::decrypt_failed);
  EXPECT_TRUE(d.encrypted);
  EXPECT_EQ(g_decrypt_calls, 1);
  // A field of the wrong type still makes it an envelope.
  EXPECT_EQ(error_of(decode(message(R"({"session_key":1,"nonce":"","tag":"","ciphertext":""})"))),
            ErrorCode::decrypt_failed);
}

TEST(RequestDecode, DecryptedPlaintextIsDecodedLikePlaintext) {
  auto accept = [](const Envelope& envelope, const std::string& device) {
    EXPECT_EQ(envelope.mode, "GCM");
    EXPECT_EQ(device, "pH01");
    return std::variant<std::string, RequestError>(
        std::string(R"({"device_id":"pH01","action":"update","user_id":"7"})"));
  };
  auto d = decode_request(
      message(R"({"session_key":"a","nonce":"b","tag":"c","ciphertext":"d","mode":"GCM"})"), 65536,
      accept, aliases);
  ASSERT_TRUE(d.request);
  EXPECT_TRUE(d.request->encrypted);
  EXPECT_EQ(d.request->action, kActionUpdate);
  EXPECT_EQ(d.request->user_id, "7");

  auto not_json = [](const Envelope&, const std::string&) {
    return std::variant<std::string, RequestError>(std::string("garbage"));
  };
  auto bad =
      decode_request(message(R"({"session_key":"a","nonce":"b","tag":"c","ciphertext":"d"})"),
                     65536, not_json, aliases);
  EXPECT_EQ(error_of(bad), ErrorCode::invalid_json);
}

TEST(RequestTimestamp, Rfc3339Forms) {
  EXPECT_EQ(parse_rfc3339("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339("2026-11-23T10:00:00Z"), 1795428000);
  EXPECT_EQ(parse_rfc3339("2026-11-23T11:00:00+01:00"), 1795428000);
  EXPECT_EQ(parse_rfc3339("2026-11-23T09:30:00.123456-00:30"), 1795428000);
  EXPECT_EQ(parse_rfc3339("2026-11-23t10:00:00z"), 1795428000);
  for (const char* bad :
       {"", "2026-11-23", "2026-11-23T10", "2026-13-01T00:00:00Z", "2026-11-23T10:00:00+0100",
        "2026-11-23T10:00:00Zjunk", "2026-11-23T10:00:00.Z"})
    EXPECT_FALSE(parse_rfc3339(bad)) << bad;
  EXPECT_EQ(format_rfc3339(1795428000), "2026-11-23T10:00:00Z");
  auto d = decode(message(R"({"timestamp":"2026-11-23T10:00:00Z"})"));
  EXPECT_EQ(d.request->ts, 1795428000);
}

// SPEC 3.1: timestamps without an offset are UTC, as the original server writes them
// (datetime.utcnow().isoformat()), and fractions of a second count.
TEST(RequestTimestamp, ZonelessIsUtcAndFractionsCount) {
  EXPECT_EQ(parse_rfc3339("2026-11-23T10:00:00"), 1795428000);
  EXPECT_EQ(parse_rfc3339_us("2026-11-23T10:00:00.123456"), 1795428000123456);
  EXPECT_EQ(parse_rfc3339_us("2026-11-23T10:00:00.5Z"), 1795428000500000);
  EXPECT_EQ(parse_rfc3339_us("2026-11-23T10:00:00.1234567899"), 1795428000123456);
  auto d =
      decode(message(R"({"timestamp":"2026-11-23T10:00:00.250000"})", "pH01", TopicKind::remove));
  ASSERT_TRUE(d.request) << d.error->message;
  EXPECT_EQ(d.request->ts, 1795428000);
  EXPECT_EQ(d.request->ts_us, 1795428000250000);
  EXPECT_EQ(decode(message(R"({"ts":1795428000})")).request->ts_us, 1795428000000000);
}

// SPEC 3.1: an empty payload is not a request (the original agent served it as one).
TEST(RequestHostile, EmptyPayloadIsInvalidJson) {
  for (TopicKind kind : {TopicKind::request, TopicKind::update, TopicKind::remove})
    EXPECT_EQ(error_of(decode(message("", "pH01", kind))), ErrorCode::invalid_json);
}

TEST(RequestHostile, NumericRequestIdIsInvalid) {
  auto d = decode(message(R"({"request_id":17})"));
  EXPECT_EQ(error_of(d), ErrorCode::invalid_request);
  EXPECT_NE(d.error->message.find("request_id"), std::string::npos);
  EXPECT_EQ(error_of(decode(message(R"({"request_id":"r","nonce":5})"))),
            ErrorCode::invalid_request);
  EXPECT_EQ(error_of(decode(message(R"({"request_id":")" + std::string(257, 'x') + R"("})"))),
            ErrorCode::invalid_request);
}

// A plugin reads request_id as a C string: a NUL inside would make it read another id than the
// one the agent recorded.
TEST(RequestHostile, RequestIdWithANulIsInvalid) {
  auto d = decode(message(R"({"request_id":"a\u0000b"})"));
  EXPECT_EQ(error_of(d), ErrorCode::invalid_request);
  EXPECT_FALSE(d.request_id) << "an id with a NUL must not be echoed";
}

TEST(RequestHostile, EmptyOrNullUserIdMeansNone) {
  for (const char* payload : {R"({"user_id":""})", R"({"user_id":null})"}) {
    auto d = decode(message(payload));
    ASSERT_TRUE(d.request) << payload;
    EXPECT_FALSE(d.request->user_id) << payload;
  }
}

// SPEC 3.1: the agent and its plugins must never read different values of one field.
TEST(RequestHostile, DuplicateMemberNamesAreRefused) {
  for (const std::string& payload :
       {std::string(R"({"device_id":"pH01","device_id":"../../../etc"})"),
        std::string(R"({"action":"publish_key","action":"delete"})"),
        std::string(R"({"extra":{"a":1,"a":2}})"), std::string(R"({"x":[{"k":1,"k":1}]})")}) {
    auto d = decode(message(payload));
    EXPECT_EQ(error_of(d), ErrorCode::invalid_request) << payload;
    EXPECT_NE(d.error->message.find("twice"), std::string::npos) << d.error->message;
  }
  // Inside an envelope too: the decrypted text obeys the same rules.
  auto twice = [](const Envelope&, const std::string&) {
    return std::variant<std::string, RequestError>(std::string(R"({"user_id":"5","user_id":"6"})"));
  };
  auto d = decode_request(message(R"({"session_key":"a","nonce":"b","tag":"c","ciphertext":"d"})"),
                          65536, twice, aliases);
  EXPECT_EQ(error_of(d), ErrorCode::invalid_request);
  // The same name in different objects is fine.
  EXPECT_TRUE(decode(message(R"({"a":{"k":1},"b":{"k":2}})")).request);
}

// SPEC 3.1: at most 32 levels with the top-level object being level 1, and parsing never
// recurses on the stack: a payload nested a hundred thousand deep is refused, not a crash.
TEST(RequestHostile, DeepNestingIsRefusedWithoutRecursion) {
  auto nested = [](int levels) {
    std::string text = "{\"x\":";
    for (int i = 1; i < levels; ++i) text += "[";
    text += "1";
    for (int i = 1; i < levels; ++i) text += "]";
    return text + "}";
  };
  EXPECT_TRUE(decode(message(nested(32))).request);
  auto d = decode(message(nested(33)));
  EXPECT_EQ(error_of(d), ErrorCode::invalid_request);
  EXPECT_NE(d.error->message.find("32"), std::string::npos) << d.error->message;
  const std::string deep = nested(400000);
  EXPECT_EQ(error_of(decode(message(deep), deep.size())), ErrorCode::invalid_request);
  // Unclosed nesting (what an attacker sends to exhaust a recursive parser) too.
  EXPECT_NE(decode(message(std::string(300000, '[')), 300000).error, std::nullopt);
}

TEST(RequestHostile, InvalidUtf8IsInvalidJson) {
  for (const std::string& payload :
       {std::string("{\"request_id\":\"\xff\"}"), std::string("{\"x\":\"\xC0\xAF\"}"),
        std::string("{\"x\":\"\xED\xA0\x80\"}"), std::string("{\"\xfe\":1}")})
    EXPECT_EQ(error_of(decode(message(payload))), ErrorCode::invalid_json) << payload;
  EXPECT_TRUE(decode(message("{\"x\":\"p\xC3\xA9 \xF0\x9F\x94\x91\"}")).request);
  // Nothing unreadable is peeked for an error reply either.
  EXPECT_FALSE(peek_request_id("{\"request_id\":\"\xff\"}", 65536));
}

// RapidJSON validates the bytes it reads but decodes a \u escape of a lone low surrogate into
// bytes that are not UTF-8 (ED B0 80), which were then echoed in published keys and reports.
TEST(RequestHostile, EscapedLoneSurrogateIsInvalidJson) {
  for (const std::string& payload :
       {std::string(R"({"request_id":"\udc00x"})"), std::string(R"({"nonce":"\udfff"})"),
        std::string(R"({"request_id":"r","\udc00":1})"), std::string(R"({"x":["\ud800"]})"),
        std::string(R"({"x":{"y":"a\udc00\ud800b"}})")}) {
    auto d = decode(message(payload));
    EXPECT_EQ(error_of(d), ErrorCode::invalid_json) << payload;
    EXPECT_FALSE(peek_request_id(payload, 65536)) << payload;
  }
  // A pair is a character; so is an escaped NUL.
  auto pair = decode(message(R"({"request_id":"\ud83d\udd11","x":"\u0000"})"));
  ASSERT_TRUE(pair.request);
  EXPECT_EQ(pair.request->request_id, std::string("\xF0\x9F\x94\x91"));
}

// SPEC 3.4: a retry's content is everything but its id and time.
TEST(RequestContent, DigestIgnoresIdsAndTimesOnly) {
  auto digest = [](const std::string& payload) {
    auto d = decode(message(payload));
    EXPECT_TRUE(d.request) << payload;
    return d.request ? d.request->content_digest : std::string();
  };
  const std::string base = digest(R"({"user_id":"5","key_type":"ec-p256","extra":1})");
  EXPECT_EQ(base.size(), 64u);
  EXPECT_EQ(base, digest(R"({"extra":1,"key_type":"ec-p256","user_id":5,"request_id":"a",)"
                         R"("ts":1795428000,"nonce":"n","timestamp":"2026-11-23T10:00:00Z"})"));
  EXPECT_EQ(base, digest(R"({"device_id":"pH01","action":"generate","user_id":"5",)"
                         R"("key_type":"ec-p256","extra":1})"));
  EXPECT_NE(base, digest(R"({"user_id":"6","key_type":"ec-p256","extra":1})"));
  EXPECT_NE(base, digest(R"({"user_id":"5","key_type":"rsa-2048","extra":1})"));
  EXPECT_NE(base, digest(R"({"user_id":"5","key_type":"ec-p256","extra":2})"));
  EXPECT_NE(base, digest(R"({"user_id":"5","key_type":"ec-p256","extra":1,"force":true})"));
  EXPECT_NE(base, digest(R"({"user_id":"5","key_type":"ec-p256","extra":1,"action":"update"})"));
}

TEST(RequestErrorCodes, NamesMatchTheSpec) {
  EXPECT_STREQ(to_string(ErrorCode::invalid_json), "invalid_json");
  EXPECT_STREQ(to_string(ErrorCode::payload_too_large), "payload_too_large");
  EXPECT_STREQ(to_string(ErrorCode::e2ee_required), "e2ee_required");
  EXPECT_STREQ(to_string(ErrorCode::plugin_failed), "plugin_failed");
  EXPECT_STREQ(to_string(ErrorCode::quota_exceeded), "quota_exceeded");
  EXPECT_STREQ(to_string(ErrorCode::expired), "expired");
  EXPECT_EQ(parse_error_code("not_found"), ErrorCode::not_found);
  EXPECT_EQ(parse_error_code("no_such_code"), std::nullopt);
}

}  // namespace
}  // namespace pa
