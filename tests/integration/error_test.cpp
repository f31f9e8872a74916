// Bad input gets an error response, never a crash and never a file (SPEC sections 3.1 and 3.3).
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

struct BadRequest {
  std::string name;
  std::string device;  // the topic's device level, where the response goes
  std::string topic_suffix;
  std::string payload;
  std::string request_id;  // empty when the payload carries none that could be read
  std::string expected_code;
};

TEST(AgentErrors, BadRequestsAreAnsweredAndTouchNoFile) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_MAX_PAYLOAD", "1024"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << "agent never published its online status";

  const std::string too_long_device(129, 'a');
  const std::string big_payload =
      R"({"request_id":"r-big","padding":")" + std::string(2000, 'x') + R"("})";
  const std::vector<BadRequest> cases = {
      {"not JSON", "err-json", "request", "{not json", "", "invalid_json"},
      {"device id starting with a dot", ".hidden", "request", R"({"request_id":"r-hidden"})",
       "r-hidden", "invalid_device_id"},
      {"device id starting with a dash", "-x", "request", R"({"request_id":"r-dash"})", "r-dash",
       "invalid_device_id"},
      {"device id ..", "..", "request", R"({"request_id":"r-dotdot"})", "r-dotdot",
       "invalid_device_id"},
      {"device id of 129 characters", too_long_device, "request", R"({"request_id":"r-129"})",
       "r-129", "invalid_device_id"},
      {"user id escaping the store", "err-user", "request",
       R"({"request_id":"r-user","user_id":"../x"})", "r-user", "invalid_user_id"},
      {"user id with a slash", "err-user2", "request",
       R"({"request_id":"r-user2","user_id":"a/b"})", "r-user2", "invalid_user_id"},
      {"device_id differing from the topic", "err-mismatch", "request",
       R"({"request_id":"r-mismatch","device_id":"other01"})", "r-mismatch", "device_mismatch"},
      {"unknown action", "err-action", "request",
       R"({"request_id":"r-action","action":"frobnicate"})", "r-action", "unknown_action"},
      {"payload over PROVISION_MAX_PAYLOAD", "err-big", "request", big_payload, "",
       "payload_too_large"},
      {"publish_key without keys", "err-nokey", "request",
       R"({"request_id":"r-nokey","action":"publish_key"})", "r-nokey", "not_found"},
      {"delete action on the update topic", "err-topic", "update",
       R"({"request_id":"r-topic","action":"delete"})", "r-topic", "invalid_request"},
      {"delete without keys", "err-nodelete", "delete", R"({"request_id":"r-nodelete"})",
       "r-nodelete", "not_found"},
  };

  for (const auto& bad : cases) {
    SCOPED_TRACE(bad.name);
    observer->publish("provision/" + bad.device + "/" + bad.topic_suffix, bad.payload);
  }
  for (const auto& bad : cases) {
    SCOPED_TRACE(bad.name);
    auto response = observer->wait_for("provision/" + bad.device + "/response", kResponseTimeout);
    ASSERT_TRUE(response) << "no response on provision/" << bad.device << "/response";
    auto json = parse_json(response->payload);
    ASSERT_FALSE(json.HasParseError()) << response->payload;
    EXPECT_EQ(json_string(json, "status"), "error") << response->payload;
    EXPECT_EQ(error_code(json), bad.expected_code) << response->payload;
    auto error = json.FindMember("error");
    if (error != json.MemberEnd()) {
      EXPECT_FALSE(json_string(error->value, "message").empty()) << "error without a message";
    }
    if (!bad.request_id.empty()) {
      EXPECT_EQ(json_string(json, "request_id"), bad.request_id);
    }
    // A delete clears the retained key even when there were no keys (SPEC 3.5): an empty
    // message is that clear, not a key.
    for (const auto& published : observer->messages("keys/" + bad.device + "/public"))
      EXPECT_TRUE(published.payload.empty()) << "a key was published for a bad request";
  }
  EXPECT_TRUE(agent.running()) << "bad input stopped the agent";

  // Nothing was created for any of them: the key store holds no file, and the agent's root
  // holds nothing but the key store and its state folder.
  // The instance lock is the one non-key file allowed there (SPEC section 5).
  for (const auto& entry : list_tree(agent.keys_dir())) {
    if (entry != ".provision-agent.lock")
      ADD_FAILURE() << "file created in the key store: " << entry;
  }
  for (const auto& entry : list_tree(agent.root())) {
    EXPECT_TRUE(entry.rfind("sensor_keys", 0) == 0 || entry.rfind("state", 0) == 0)
        << "file created outside the key store: " << entry;
    EXPECT_EQ(entry.find("other01"), std::string::npos) << entry;
    EXPECT_EQ(entry.find("err-"), std::string::npos) << entry;
  }

  // The agent still serves good requests afterwards.
  observer->publish("provision/good01/request", R"({"request_id":"r-good"})");
  auto good = wait_response(*observer, "good01", "r-good");
  ASSERT_TRUE(good);
  EXPECT_EQ(json_string(parse_json(good->payload), "status"), "ok") << good->payload;
}

}  // namespace
}  // namespace pa::test
