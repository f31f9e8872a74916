// The provisioning flow as a server sees it (SPEC sections 3, 3.1-3.3 and 5): a request on the
// broker, key files on disk, the public key and a response on the broker.
#include <gtest/gtest.h>

#include <regex>

#include <fmt/format.h>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

class AgentFlowTest : public ::testing::Test {
 protected:
  void SetUp() override { observer = make_observer(broker.port()); }

  // Publishes a request and returns its response (fails the test when none arrives).
  rapidjson::Document request(const std::string& topic, const std::string& device,
                              const std::string& request_id, const std::string& payload) {
    observer->publish(topic, payload);
    auto response = wait_response(*observer, device, request_id);
    EXPECT_TRUE(response) << "no response to " << payload << " on " << topic;
    rapidjson::Document json = parse_json(response ? response->payload : "null");
    EXPECT_FALSE(json.HasParseError()) << (response ? response->payload : "");
    return json;
  }

  // The number of messages (live or retained) seen on keys/<device>/public.
  std::size_t key_messages(const std::string& device) {
    return observer->messages("keys/" + device + "/public").size();
  }

  Broker broker;
  std::unique_ptr<MqttClient> observer;
};

// Asserts everything SPEC 3.2, 3.3 and 5 say about a freshly served generate request.
void expect_served_rsa_key(MqttClient& observer, const Agent& agent, const std::string& device,
                           const std::string& user, const std::string& request_id,
                           const rapidjson::Document& response) {
  SCOPED_TRACE("device " + device + " user '" + user + "'");
  // Response (3.3).
  EXPECT_EQ(json_string(response, "status"), "ok");
  EXPECT_EQ(json_string(response, "request_id"), request_id);
  EXPECT_EQ(json_string(response, "device_id"), device);
  EXPECT_EQ(json_string(response, "action"), "generate_and_publish_key");
  ASSERT_TRUE(json_has(response, "encrypted"));
  EXPECT_TRUE(response["encrypted"].IsBool() && !response["encrypted"].GetBool());
  if (!user.empty()) {
    ASSERT_TRUE(json_has(response, "user_id"));
    EXPECT_TRUE(response["user_id"].IsString()) << "user_id must be a string";
    EXPECT_EQ(json_string(response, "user_id"), user);
  }

  // Files (5).
  const std::string folder = agent.device_dir(device, user);
  const std::string private_pem = folder + "/sensor_private.pem";
  const std::string public_pem = folder + "/sensor_public.pem";
  EXPECT_EQ(file_mode(agent.keys_dir()), 0700);
  if (!user.empty()) {
    EXPECT_EQ(file_mode(agent.keys_dir() + "/" + user), 0700);
  }
  EXPECT_EQ(file_mode(folder), 0700);
  ASSERT_EQ(file_mode(private_pem), 0600);
  ASSERT_EQ(file_mode(public_pem), 0644);
  const std::string private_text = read_file(private_pem);
  const std::string public_text = read_file(public_pem);
  EXPECT_EQ(private_text.rfind("-----BEGIN PRIVATE KEY-----", 0), 0u) << "not PKCS#8 PEM";
  EXPECT_EQ(public_text.rfind("-----BEGIN PUBLIC KEY-----", 0), 0u) << "not SPKI PEM";
  auto check = run_command("openssl pkey -in " + shell_quote(private_pem) + " -check -noout");
  EXPECT_EQ(check.exit_code, 0) << check.output;
  auto text = run_command("openssl pkey -in " + shell_quote(private_pem) + " -noout -text");
  EXPECT_NE(text.output.find("2048 bit"), std::string::npos) << text.output.substr(0, 200);
  auto derived = run_command("openssl pkey -in " + shell_quote(private_pem) + " -pubout");
  EXPECT_EQ(derived.output, public_text) << "sensor_public.pem does not match the private key";

  // Published key (3.2).
  auto key = wait_key(observer, device, request_id);
  ASSERT_TRUE(key) << "no key published on keys/" << device << "/public";
  auto key_json = parse_json(key->payload);
  ASSERT_FALSE(key_json.HasParseError()) << key->payload;
  EXPECT_EQ(json_string(key_json, "device_id"), device);
  if (user.empty()) {
    EXPECT_FALSE(json_has(key_json, "user_id")) << "user_id must be omitted without a user";
  } else {
    ASSERT_TRUE(json_has(key_json, "user_id"));
    EXPECT_TRUE(key_json["user_id"].IsString()) << "user_id must be a string";
    EXPECT_EQ(json_string(key_json, "user_id"), user);
  }
  EXPECT_EQ(json_string(key_json, "action"), "generate_and_publish_key");
  EXPECT_EQ(json_string(key_json, "key_type"), "rsa-2048");
  EXPECT_EQ(json_string(key_json, "public_key"), public_text);
  EXPECT_EQ(json_string(key_json, "agent_id"), agent.client_id());
  EXPECT_TRUE(std::regex_match(json_string(key_json, "created_at"),
                               std::regex(R"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z)")))
      << json_string(key_json, "created_at");
  const std::string fingerprint = openssl_fingerprint(public_pem);
  EXPECT_EQ(json_string(key_json, "fingerprint"), fingerprint);
  EXPECT_EQ(json_string(response, "fingerprint"), fingerprint);
}

TEST_F(AgentFlowTest, GeneratesStoresAndPublishesRsaKeyWithUserAndInLegacyLayout) {
  Agent agent(broker.port(), {{"PROVISION_KEY_TYPE", "rsa-2048"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << "agent never published its online status";

  // user_id sent as an integer is stored under, and answered as, the string "5".
  auto response = request("provision/pH01/request", "pH01", "req-int-user",
                          R"({"device_id":"pH01","user_id":5,"request_id":"req-int-user"})");
  expect_served_rsa_key(*observer, agent, "pH01", "5", "req-int-user", response);

  response = request("provision/pH02/request", "pH02", "req-string-user",
                     R"({"user_id":"5","request_id":"req-string-user"})");
  expect_served_rsa_key(*observer, agent, "pH02", "5", "req-string-user", response);

  // No user: the legacy layout <root>/<device>.
  response = request("provision/ec01/request", "ec01", "req-legacy",
                     R"({"device_id":"ec01","action":"generate_and_publish_key",)"
                     R"("request_id":"req-legacy"})");
  expect_served_rsa_key(*observer, agent, "ec01", "", "req-legacy", response);
  EXPECT_FALSE(file_exists(agent.keys_dir() + "/5/ec01"));
}

TEST_F(AgentFlowTest, AcceptsLongestValidIdentifiers) {
  Agent agent(broker.port());
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  const std::string device = "D" + std::string(126, 'a') + "9";  // 128 characters
  const std::string user = "u._-" + std::string(124, 'Z');       // 128 characters
  ASSERT_EQ(device.size(), 128u);
  ASSERT_EQ(user.size(), 128u);
  auto response =
      request("provision/" + device + "/request", device, "req-long",
              fmt::format(R"({{"user_id":{},"request_id":"req-long"}})", json_quote(user)));
  EXPECT_EQ(json_string(response, "status"), "ok") << error_code(response);
  EXPECT_TRUE(file_exists(agent.device_dir(device, user) + "/sensor_private.pem"));
}

TEST_F(AgentFlowTest, RetainedKeyReachesLateSubscriber) {
  Agent agent(broker.port());
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  auto response = request("provision/late01/request", "late01", "req-late",
                          R"({"user_id":"7","request_id":"req-late"})");
  ASSERT_EQ(json_string(response, "status"), "ok") << error_code(response);

  MqttClient late(broker.port());
  late.subscribe("keys/late01/public");
  auto key = late.wait_for("keys/late01/public", 10s);
  ASSERT_TRUE(key) << "a client subscribing after the response got no retained key";
  EXPECT_TRUE(key->retain);
  auto key_json = parse_json(key->payload);
  EXPECT_EQ(json_string(key_json, "fingerprint"), json_string(response, "fingerprint"));
  EXPECT_EQ(json_string(key_json, "public_key"),
            read_file(agent.device_dir("late01", "7") + "/sensor_public.pem"));

  // The agent's status is retained too, with what a server needs (SPEC sections 3 and 4).
  late.subscribe(agent.status_topic());
  auto status = late.wait_for(agent.status_topic(), 10s);
  ASSERT_TRUE(status) << "no retained status for a late subscriber";
  EXPECT_TRUE(status->retain);
  auto status_json = parse_json(status->payload);
  EXPECT_EQ(json_string(status_json, "status"), "online") << status->payload;
  EXPECT_EQ(json_string(status_json, "agent_id"), agent.client_id()) << status->payload;
  EXPECT_FALSE(json_string(status_json, "version").empty()) << status->payload;
  EXPECT_EQ(json_string(status_json, "public_key").rfind("-----BEGIN PUBLIC KEY-----", 0), 0u)
      << "the status carries no agent public key: " << status->payload;
}

TEST_F(AgentFlowTest, RepeatedRequestIsIdempotentAndForceReplacesKey) {
  Agent agent(broker.port());
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  const std::string folder = agent.device_dir("idem01", "3");

  auto first = request("provision/idem01/request", "idem01", "req-1",
                       R"({"user_id":"3","request_id":"req-1"})");
  ASSERT_EQ(json_string(first, "status"), "ok") << error_code(first);
  const std::string first_private = read_file(folder + "/sensor_private.pem");
  const std::string first_fingerprint = json_string(first, "fingerprint");
  ASSERT_FALSE(first_private.empty());

  // The same request again: the existing key is published again, nothing changes on disk.
  auto again = request("provision/idem01/request", "idem01", "req-2",
                       R"({"user_id":"3","request_id":"req-2"})");
  EXPECT_EQ(json_string(again, "status"), "ok") << error_code(again);
  EXPECT_EQ(json_string(again, "fingerprint"), first_fingerprint);
  EXPECT_EQ(read_file(folder + "/sensor_private.pem"), first_private);
  auto again_key = wait_key(*observer, "idem01", "req-2");
  ASSERT_TRUE(again_key) << "the repeated request published no key";
  EXPECT_EQ(json_string(parse_json(again_key->payload), "fingerprint"), first_fingerprint);

  // force: a new pair replaces the old one.
  auto forced = request("provision/idem01/request", "idem01", "req-3",
                        R"({"user_id":"3","request_id":"req-3","force":true})");
  EXPECT_EQ(json_string(forced, "status"), "ok") << error_code(forced);
  EXPECT_NE(json_string(forced, "fingerprint"), first_fingerprint);
  EXPECT_NE(read_file(folder + "/sensor_private.pem"), first_private);
  EXPECT_EQ(json_string(forced, "fingerprint"), openssl_fingerprint(folder + "/sensor_public.pem"));
  auto forced_key = wait_key(*observer, "idem01", "req-3");
  ASSERT_TRUE(forced_key);
  EXPECT_EQ(json_string(parse_json(forced_key->payload), "fingerprint"),
            json_string(forced, "fingerprint"));
}

TEST_F(AgentFlowTest, UpdateKeepsOneBackupAndDeleteClearsKeys) {
  Agent agent(broker.port());
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  const std::string device = "rot01";
  const std::string folder = agent.device_dir(device, "9");
  const std::string private_pem = folder + "/sensor_private.pem";
  const std::string public_pem = folder + "/sensor_public.pem";
  const std::string private_prev = folder + "/sensor_private.prev.pem";
  const std::string public_prev = folder + "/sensor_public.prev.pem";

  auto created = request("provision/rot01/request", device, "req-create",
                         R"({"user_id":"9","request_id":"req-create"})");
  ASSERT_EQ(json_string(created, "status"), "ok") << error_code(created);
  const std::string gen1_private = read_file(private_pem);
  const std::string gen1_public = read_file(public_pem);

  // update through the action field on the request topic.
  auto updated = request("provision/rot01/request", device, "req-update",
                         R"({"user_id":"9","action":"update","request_id":"req-update"})");
  ASSERT_EQ(json_string(updated, "status"), "ok") << error_code(updated);
  EXPECT_EQ(json_string(updated, "action"), "update");
  EXPECT_NE(json_string(updated, "fingerprint"), json_string(created, "fingerprint"));
  EXPECT_EQ(json_string(updated, "fingerprint"), openssl_fingerprint(public_pem));
  auto updated_key = wait_key(*observer, device, "req-update");
  ASSERT_TRUE(updated_key) << "update published no key";
  EXPECT_EQ(json_string(parse_json(updated_key->payload), "public_key"), read_file(public_pem));
  EXPECT_EQ(file_mode(private_prev), 0600);
  EXPECT_EQ(file_mode(public_prev), 0600);
  EXPECT_EQ(read_file(private_prev), gen1_private);
  EXPECT_EQ(read_file(public_prev), gen1_public);
  const std::string gen2_private = read_file(private_pem);
  const std::string gen2_public = read_file(public_pem);

  // update through the update topic with an empty JSON object. No user in the payload selects
  // the legacy folder, so this one rotates a key created without a user.
  const std::string legacy = agent.device_dir("rot02");
  auto legacy_created =
      request("provision/rot02/request", "rot02", "req-create2", R"({"request_id":"req-create2"})");
  ASSERT_EQ(json_string(legacy_created, "status"), "ok") << error_code(legacy_created);
  const std::string legacy_gen1 = read_file(legacy + "/sensor_private.pem");
  ASSERT_TRUE(wait_key(*observer, "rot02", "req-create2"));
  const std::size_t keys_before = key_messages("rot02");
  observer->publish("provision/rot02/update", "{}");
  ASSERT_TRUE(observer->wait_count("provision/rot02/response", 2, kResponseTimeout))
      << "no response to {} on provision/rot02/update";
  auto topic_update = parse_json(observer->messages("provision/rot02/response").back().payload);
  EXPECT_EQ(json_string(topic_update, "status"), "ok") << error_code(topic_update);
  EXPECT_EQ(json_string(topic_update, "action"), "update");
  EXPECT_EQ(read_file(legacy + "/sensor_private.prev.pem"), legacy_gen1);
  EXPECT_NE(read_file(legacy + "/sensor_private.pem"), legacy_gen1);
  EXPECT_EQ(json_string(topic_update, "fingerprint"),
            openssl_fingerprint(legacy + "/sensor_public.pem"));
  EXPECT_TRUE(observer->wait_count("keys/rot02/public", keys_before + 1, kResponseTimeout))
      << "the update topic published no new key";

  // A second update keeps exactly one previous generation: the one just replaced.
  auto second = request("provision/rot01/update", device, "req-update2",
                        R"({"user_id":"9","request_id":"req-update2"})");
  ASSERT_EQ(json_string(second, "status"), "ok") << error_code(second);
  EXPECT_EQ(read_file(private_prev), gen2_private);
  EXPECT_EQ(read_file(public_prev), gen2_public);
  for (const auto& entry : list_tree(folder)) {
    EXPECT_TRUE(entry == "sensor_private.pem" || entry == "sensor_public.pem" ||
                entry == "sensor_private.prev.pem" || entry == "sensor_public.prev.pem")
        << "unexpected file in the device folder: " << entry;
  }

  // delete on the delete topic: files gone, retained key cleared.
  auto deleted = request("provision/rot01/delete", device, "req-delete",
                         R"({"user_id":"9","request_id":"req-delete"})");
  EXPECT_EQ(json_string(deleted, "status"), "ok") << error_code(deleted);
  EXPECT_EQ(json_string(deleted, "action"), "delete");
  EXPECT_FALSE(file_exists(private_pem));
  EXPECT_FALSE(file_exists(public_pem));
  EXPECT_FALSE(file_exists(private_prev));
  EXPECT_FALSE(file_exists(public_prev));
  EXPECT_TRUE(observer
                  ->wait_for("keys/rot01/public", kResponseTimeout,
                             [](const Message& message) { return message.payload.empty(); })
                  .has_value())
      << "delete did not publish an empty payload on keys/rot01/public";

  // A late subscriber sees no retained key: the marker it publishes after subscribing comes
  // back after anything retained would have been delivered.
  MqttClient late(broker.port());
  late.subscribe("keys/rot01/public");
  late.subscribe("pa-test/marker");
  late.publish("pa-test/marker", "end");
  ASSERT_TRUE(late.wait_for("pa-test/marker", 10s));
  EXPECT_TRUE(late.messages("keys/rot01/public").empty())
      << "a retained key is still on keys/rot01/public: "
      << late.messages("keys/rot01/public").front().payload;

  auto deleted_again = request("provision/rot01/delete", device, "req-delete2",
                               R"({"user_id":"9","request_id":"req-delete2"})");
  EXPECT_EQ(json_string(deleted_again, "status"), "error");
  EXPECT_EQ(error_code(deleted_again), "not_found");
}

// SPEC 3.4: a server may simply retry any request it got no answer for. The same id with the same
// content is answered from its record (duplicate: true, the current key published again) and is
// not run again, also after a restart; the same id with other content is a replay.
TEST_F(AgentFlowTest, RetryIsAnsweredFromItsRecordAlsoAfterRestart) {
  Agent agent(broker.port());
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  const std::string payload = R"({"request_id":"once-only","force":true})";
  const std::string private_pem = agent.device_dir("rep01") + "/sensor_private.pem";

  auto first = request("provision/rep01/request", "rep01", "once-only", payload);
  ASSERT_EQ(json_string(first, "status"), "ok") << error_code(first);
  EXPECT_FALSE(json_has(first, "duplicate"));
  const std::string fingerprint = json_string(first, "fingerprint");
  const std::string private_before = read_file(private_pem);
  ASSERT_TRUE(observer->wait_count("keys/rep01/public", 1, kResponseTimeout));

  // The same request again (force would replace the key if it were run again).
  observer->publish("provision/rep01/request", payload);
  ASSERT_TRUE(observer->wait_count("provision/rep01/response", 2, kResponseTimeout));
  auto second = parse_json(observer->messages("provision/rep01/response").back().payload);
  EXPECT_EQ(json_string(second, "status"), "ok");
  ASSERT_TRUE(json_has(second, "duplicate"));
  EXPECT_TRUE(second["duplicate"].GetBool());
  EXPECT_EQ(json_string(second, "request_id"), "once-only");
  EXPECT_EQ(json_string(second, "fingerprint"), fingerprint);
  EXPECT_EQ(read_file(private_pem), private_before);
  ASSERT_TRUE(observer->wait_count("keys/rep01/public", 2, kResponseTimeout))
      << "the retry did not publish the current key again";
  EXPECT_EQ(json_string(parse_json(observer->messages("keys/rep01/public").back().payload),
                        "fingerprint"),
            fingerprint);

  // The same id with other content: a replay, reported, nothing changed.
  observer->subscribe("provision/status/rep01/replay_blocked");
  observer->publish("provision/rep01/request",
                    R"({"request_id":"once-only","force":true,"key_type":"rsa-2048"})");
  ASSERT_TRUE(observer->wait_count("provision/rep01/response", 3, kResponseTimeout));
  auto third = parse_json(observer->messages("provision/rep01/response").back().payload);
  EXPECT_EQ(error_code(third), "replay");
  auto report = observer->wait_for("provision/status/rep01/replay_blocked", kResponseTimeout);
  ASSERT_TRUE(report);
  EXPECT_EQ(json_string(parse_json(report->payload), "reason"), "id_reused");
  EXPECT_EQ(read_file(private_pem), private_before);

  // The record survives a restart.
  ASSERT_EQ(agent.stop(), 0);
  observer->clear();
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  auto fourth = request("provision/rep01/request", "rep01", "once-only", payload);
  EXPECT_EQ(json_string(fourth, "status"), "ok") << error_code(fourth);
  EXPECT_TRUE(json_has(fourth, "duplicate"));
  EXPECT_EQ(json_string(fourth, "fingerprint"), fingerprint);
  EXPECT_EQ(read_file(private_pem), private_before);
}

// SPEC 3.4: a failed run does not use up its id: the retry runs.
TEST_F(AgentFlowTest, FailedRequestDoesNotUseUpItsId) {
  Agent agent(broker.port());
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  auto first = request("provision/fail01/request", "fail01", "pk-1",
                       R"({"action":"publish_key","request_id":"pk-1"})");
  EXPECT_EQ(error_code(first), "not_found");
  auto generated =
      request("provision/fail01/request", "fail01", "gen-1", R"({"request_id":"gen-1"})");
  ASSERT_EQ(json_string(generated, "status"), "ok");
  observer->clear();
  auto retry = request("provision/fail01/request", "fail01", "pk-1",
                       R"({"action":"publish_key","request_id":"pk-1"})");
  EXPECT_EQ(json_string(retry, "status"), "ok") << error_code(retry);
  EXPECT_FALSE(json_has(retry, "duplicate"));
}

TEST_F(AgentFlowTest, RequestKeyTypeOverridesDefault) {
  Agent agent(broker.port());  // PROVISION_KEY_TYPE=ec-p256
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  auto response = request("provision/kt01/request", "kt01", "req-kt",
                          R"({"request_id":"req-kt","key_type":"ed25519"})");
  ASSERT_EQ(json_string(response, "status"), "ok") << error_code(response);
  auto key = wait_key(*observer, "kt01", "req-kt");
  ASSERT_TRUE(key);
  EXPECT_EQ(json_string(parse_json(key->payload), "key_type"), "ed25519");
  const std::string private_pem = agent.device_dir("kt01") + "/sensor_private.pem";
  auto text = run_command("openssl pkey -in " + shell_quote(private_pem) + " -noout -text");
  EXPECT_EQ(text.exit_code, 0) << text.output;
  EXPECT_NE(text.output.find("ED25519"), std::string::npos) << text.output;
  EXPECT_EQ(json_string(response, "fingerprint"),
            openssl_fingerprint(agent.device_dir("kt01") + "/sensor_public.pem"));
}

TEST_F(AgentFlowTest, PemKeyFormatPublishesPemAlone) {
  Agent agent(broker.port(), {{"PROVISION_KEY_FORMAT", "pem"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  auto response = request("provision/pem01/request", "pem01", "req-pem",
                          R"({"request_id":"req-pem","user_id":"2"})");
  ASSERT_EQ(json_string(response, "status"), "ok") << error_code(response);
  auto key = observer->wait_for("keys/pem01/public", kResponseTimeout);
  ASSERT_TRUE(key) << "no key published";
  EXPECT_EQ(key->payload, read_file(agent.device_dir("pem01", "2") + "/sensor_public.pem"));
}

TEST_F(AgentFlowTest, DefaultE2eePolicyRefusesPlaintextDeleteOfExistingKeys) {
  Agent agent(broker.port());
  agent.unset_env("PROVISION_E2EE_POLICY");  // default: destructive
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  auto created =
      request("provision/pol01/request", "pol01", "req-create", R"({"request_id":"req-create"})");
  ASSERT_EQ(json_string(created, "status"), "ok") << error_code(created);
  const std::string private_before = read_file(agent.device_dir("pol01") + "/sensor_private.pem");

  auto deleted =
      request("provision/pol01/delete", "pol01", "req-delete", R"({"request_id":"req-delete"})");
  EXPECT_EQ(json_string(deleted, "status"), "error");
  EXPECT_EQ(error_code(deleted), "e2ee_required");
  auto updated = request("provision/pol01/request", "pol01", "req-update",
                         R"({"action":"update","request_id":"req-update"})");
  EXPECT_EQ(error_code(updated), "e2ee_required");
  EXPECT_EQ(read_file(agent.device_dir("pol01") + "/sensor_private.pem"), private_before);
}

TEST_F(AgentFlowTest, DeviceFilterIgnoresOtherDevices) {
  Agent agent(broker.port(), {{"PROVISION_DEVICES", "pH*"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));

  observer->publish("provision/ec01/request", R"({"request_id":"req-ec01"})");
  auto served =
      request("provision/pH01/request", "pH01", "req-pH01", R"({"request_id":"req-pH01"})");
  EXPECT_EQ(json_string(served, "status"), "ok") << error_code(served);
  EXPECT_TRUE(file_exists(agent.device_dir("pH01") + "/sensor_private.pem"));

  // Silence is the expected outcome; a bounded wait gives a wrong answer time to show up.
  EXPECT_FALSE(observer->wait_for("provision/ec01/response", 2s)) << "ec01 was answered";
  EXPECT_TRUE(observer->messages("keys/ec01/public").empty());
  EXPECT_FALSE(file_exists(agent.device_dir("ec01")));
}

}  // namespace
}  // namespace pa::test
