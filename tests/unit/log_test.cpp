// Logging (SPEC section 8) as an operator reads it on stderr: one line per event with its fields,
// control characters escaped, private keys and registered secrets never shown, the threshold
// respected, and the last error kept for systemd's STATUS= line.
#include "base/log.hpp"

#include <gtest/gtest.h>

#include <string>

namespace pa {
namespace {

// What one log_write printed on stderr.
std::string logged(LogLevel level, const LogFields& fields, const std::string& message) {
  testing::internal::CaptureStderr();
  log_write(level, fields, message);
  return testing::internal::GetCapturedStderr();
}

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override { log_init(LogLevel::debug); }
  void TearDown() override { log_init(LogLevel::info); }
};

TEST_F(LogTest, OneLineWithLevelAndFields) {
  LogFields fields;
  fields.device = "pH01";
  fields.user = "alice";
  fields.action = "update";
  fields.request_id = "r-1";
  fields.outcome = "ok";
  fields.error_code = "none";
  fields.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const std::string line = logged(LogLevel::info, fields, "served");
  // "2026-11-23T10:00:00Z info: served device=pH01 ..."
  ASSERT_GE(line.size(), 21u);
  EXPECT_EQ(line[4], '-');
  EXPECT_EQ(line[10], 'T');
  EXPECT_EQ(line.substr(19, 2), "Z ");
  EXPECT_EQ(line.substr(21),
            "info: served device=pH01 user=alice action=update request_id=r-1 outcome=ok "
            "error=none traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\n");
}

TEST_F(LogTest, ControlCharactersFromTheWireStayOnOneLine) {
  LogFields fields;
  fields.request_id = "a\nfake line";
  const std::string line = logged(LogLevel::warning, fields, "bad\r\n\x01 request");
  EXPECT_NE(line.find("warning: bad\\r\\n\\x01 request request_id=a\\nfake line\n"),
            std::string::npos)
      << line;
  EXPECT_EQ(line.find('\n'), line.size() - 1) << line;
}

TEST_F(LogTest, PrivateKeyBlocksAreRedacted) {
  const std::string line = logged(LogLevel::error, {},
                                  "got -----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE "
                                  "KEY----- and -----BEGIN EC PRIVATE KEY-----\nMHcC");
  EXPECT_EQ(line.find("MIIE"), std::string::npos) << line;
  EXPECT_EQ(line.find("MHcC"), std::string::npos) << line;
  EXPECT_NE(line.find("got [private key redacted] and [private key redacted]"), std::string::npos)
      << line;
}

// The fields were once written as given: a request id from the wire could carry the password out.
TEST_F(LogTest, RegisteredSecretsAreMaskedEverywhere) {
  log_redact("hunter2");
  LogFields fields;
  fields.user = "hunter2";
  const std::string line = logged(LogLevel::info, fields, "password hunter2, again hunter2");
  EXPECT_EQ(line.find("hunter2"), std::string::npos) << line;
  EXPECT_NE(line.find("password ********, again ********"), std::string::npos) << line;
}

// A password made of the mask's own characters ("*", "**") made the masking loop forever, the
// first time a log line held it (PROVISION_DEVICES=* is logged).
TEST_F(LogTest, ASecretInsideTheMaskIsMaskedOnce) {
  log_redact("p4ss");
  log_redact("**");
  const std::string line = logged(LogLevel::info, {}, "a ** b p4ss ***");
  EXPECT_NE(line.find("info: a ******** b ******** *********\n"), std::string::npos) << line;
}

TEST_F(LogTest, BelowTheThresholdNothingIsWritten) {
  log_init(LogLevel::warning);
  EXPECT_FALSE(log_enabled(LogLevel::info));
  EXPECT_TRUE(log_enabled(LogLevel::error));
  EXPECT_EQ(logged(LogLevel::info, {}, "quiet"), "");
  EXPECT_NE(logged(LogLevel::warning, {}, "loud").find("warning: loud"), std::string::npos);
}

TEST_F(LogTest, TheLastErrorIsKeptForStatus) {
  logged(LogLevel::error, {}, "broker refused");
  EXPECT_EQ(log_last_error(), "broker refused");
  LogFields fields;
  fields.device = "pH02";
  fields.outcome = "error";
  fields.error_code = "storage_failed";
  logged(LogLevel::warning, fields, "disk full");
  EXPECT_EQ(log_last_error(), "storage_failed for pH02: disk full");
  logged(LogLevel::info, {}, "fine again");
  EXPECT_EQ(log_last_error(), "storage_failed for pH02: disk full");
  logged(LogLevel::error, {}, std::string(500, 'x'));
  EXPECT_EQ(log_last_error().size(), 200u);
}

TEST(LogLevelNames, OneTableForShowingAndReading) {
  EXPECT_EQ(enum_name(kLogLevelNames, LogLevel::warning), "warning");
  EXPECT_EQ(parse_enum(kLogLevelNames, "WARN"), LogLevel::warning);
  EXPECT_EQ(parse_enum(kLogLevelNames, "Debug"), LogLevel::debug);
  EXPECT_FALSE(parse_enum(kLogLevelNames, "verbose"));
  EXPECT_EQ(shown_enum_names(kLogLevelNames),
            (std::vector<std::string_view>{"debug", "info", "warning", "error"}));
}

}  // namespace
}  // namespace pa
