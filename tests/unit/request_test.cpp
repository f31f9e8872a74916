// Request decoding (SPEC sections 3.1 and 3.3): each error code the decoder answers, aliases,
// identifiers, timestamps, and that an envelope is never read as plaintext.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "request.hpp"

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

Decoded decode(const InboundMessage& m, std::size_t max_payload = 65536) {
  return decode_request(m, max_payload, refuse);
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
  EXPECT_EQ(decode(message(R"({"action":"publish_key"})")).request->action, kActionPublishKey);
  // Custom actions pass through for plugins such as exec; the dispatcher answers unknown_action.
  EXPECT_EQ(decode(message(R"({"action":"reboot_sensor"})")).request->action, "reboot_sensor");
  EXPECT_FALSE(decode(message(R"({"user_id":null})")).request->user_id);
}

TEST(RequestDecode, TopicNamesTheActionOnUpdateAndDelete) {
  EXPECT_EQ(decode(message("", "pH01", TopicKind::update)).request->action, kActionUpdate);
  EXPECT_EQ(decode(message("", "pH01", TopicKind::remove)).request->action, kActionDelete);
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
  for (const char* payload : {R"({"user_id":"../x"})", R"({"user_id":"a/b"})", R"({"user_id":""})",
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
      accept);
  ASSERT_TRUE(d.request);
  EXPECT_TRUE(d.request->encrypted);
  EXPECT_EQ(d.request->action, kActionUpdate);
  EXPECT_EQ(d.request->user_id, "7");

  auto not_json = [](const Envelope&, const std::string&) {
    return std::variant<std::string, RequestError>(std::string("garbage"));
  };
  auto bad = decode_request(
      message(R"({"session_key":"a","nonce":"b","tag":"c","ciphertext":"d"})"), 65536, not_json);
  EXPECT_EQ(error_of(bad), ErrorCode::invalid_json);
}

TEST(RequestTimestamp, Rfc3339Forms) {
  EXPECT_EQ(parse_rfc3339("1970-01-01T00:00:00Z"), 0);
  EXPECT_EQ(parse_rfc3339("2026-11-23T10:00:00Z"), 1795428000);
  EXPECT_EQ(parse_rfc3339("2026-11-23T11:00:00+01:00"), 1795428000);
  EXPECT_EQ(parse_rfc3339("2026-11-23T09:30:00.123456-00:30"), 1795428000);
  EXPECT_EQ(parse_rfc3339("2026-11-23t10:00:00z"), 1795428000);
  for (const char* bad :
       {"", "2026-11-23", "2026-11-23T10:00:00", "2026-13-01T00:00:00Z", "2026-11-23T10:00:00+0100",
        "2026-11-23T10:00:00Zjunk", "2026-11-23T10:00:00.Z"})
    EXPECT_FALSE(parse_rfc3339(bad)) << bad;
  EXPECT_EQ(format_rfc3339(1795428000), "2026-11-23T10:00:00Z");
  auto d = decode(message(R"({"timestamp":"2026-11-23T10:00:00Z"})"));
  EXPECT_EQ(d.request->ts, 1795428000);
}

TEST(RequestErrorCodes, NamesMatchTheSpec) {
  EXPECT_STREQ(to_string(ErrorCode::invalid_json), "invalid_json");
  EXPECT_STREQ(to_string(ErrorCode::payload_too_large), "payload_too_large");
  EXPECT_STREQ(to_string(ErrorCode::e2ee_required), "e2ee_required");
  EXPECT_STREQ(to_string(ErrorCode::plugin_failed), "plugin_failed");
}

}  // namespace
}  // namespace pa
