// Options and failure paths seen from outside (SPEC sections 2, 3 and 3.3): a broker reached
// through MQTT_BROKER_CONFIG alone, custom topic bases, unretained keys, and storage_failed.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

TEST(AgentOptions, ReachesTheBrokerNamedOnlyByTheBrokerConfigJson) {
  Broker broker;
  auto observer = make_observer(broker.port());
  TempDir dir;
  const std::string json = dir.file("broker.json");
  write_file(json, fmt::format(R"({{"mqtt":{{"broker":"mqtt://127.0.0.1:{}",)"
                               R"("brokerConfig":{{"keepAlive":30,"cleanSession":true}}}}}})",
                               broker.port()));
  Agent agent(broker.port(), {{"MQTT_BROKER_CONFIG", json}});
  agent.unset_env("MQTT_HOST");
  agent.unset_env("MQTT_PORT");
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();
  observer->publish("provision/bc01/request", R"({"request_id":"bc-1"})");
  auto response = wait_response(*observer, "bc01", "bc-1");
  ASSERT_TRUE(response) << agent.log();
  EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok");
  EXPECT_EQ(agent.stop(), 0);
}

TEST(AgentOptions, CustomTopicBases) {
  Broker broker;
  MqttClient observer(broker.port());
  observer.subscribe("site/#");
  Agent agent(broker.port(), {{"MQTT_PROVISION_TOPIC_BASE", "site/a/provision"},
                              {"MQTT_KEYS_TOPIC_BASE", "site/a/keys"}});
  agent.start();
  const std::string status = "site/a/provision/agents/" + agent.client_id() + "/status";
  ASSERT_TRUE(observer.wait_for(status, kOnlineTimeout)) << agent.log();
  observer.publish("site/a/provision/tb01/request", R"({"request_id":"tb-1"})");
  auto response = observer.wait_for("site/a/provision/tb01/response", kResponseTimeout);
  ASSERT_TRUE(response) << agent.log();
  EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok");
  auto key = observer.wait_for("site/a/keys/tb01/public", kResponseTimeout);
  ASSERT_TRUE(key);
  EXPECT_EQ(json_string(parse_json(key->payload), "device_id"), "tb01");
  // The default topics are not served.
  observer.publish("provision/tb02/request", R"({"request_id":"tb-2"})");
  EXPECT_FALSE(observer.wait_for("site/a/provision/tb02/response", 1500ms));
  EXPECT_FALSE(file_exists(agent.device_dir("tb02")));
  EXPECT_EQ(agent.stop(), 0);
}

TEST(AgentOptions, KeysAreNotRetainedWhenTurnedOff) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"PROVISION_RETAIN_KEYS", "false"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  observer->publish("provision/nr01/request", R"({"request_id":"nr-1"})");
  auto key = wait_key(*observer, "nr01", "nr-1");
  ASSERT_TRUE(key) << agent.log();
  EXPECT_FALSE(key->retain);
  MqttClient late(broker.port());
  late.subscribe("keys/nr01/public");
  EXPECT_FALSE(late.wait_for("keys/nr01/public", 1500ms)) << "a late subscriber got a key";
  EXPECT_EQ(agent.stop(), 0);
}

TEST(AgentOptions, UnwritableDeviceFolderIsStorageFailed) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port());
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  // A file where the user folder should be: no mode trick stops root, this does.
  write_file(agent.keys_dir() + "/9", "not a folder", 0600);
  observer->publish("provision/sf01/request", R"({"request_id":"sf-1","user_id":"9"})");
  auto response = wait_response(*observer, "sf01", "sf-1");
  ASSERT_TRUE(response) << agent.log();
  EXPECT_EQ(error_code(parse_json(response->payload)), "storage_failed") << response->payload;
  EXPECT_EQ(read_file(agent.keys_dir() + "/9"), "not a folder");
  EXPECT_FALSE(observer->wait_for("keys/sf01/public", 500ms)) << "a key was published";
  EXPECT_TRUE(agent.running()) << "a storage error must not take the daemon down";
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace pa::test
