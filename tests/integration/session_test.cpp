// The persistent MQTT session and reconnection (SPEC section 3): requests published while the
// agent is down are served when it is back; a restarted broker is reconnected to.
#include <gtest/gtest.h>

#include <set>

#include <fmt/format.h>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

bool is_status(const Message& message, const std::string& status) {
  auto json = parse_json(message.payload);
  return !json.HasParseError() && json_string(json, "status") == status;
}

TEST(AgentSession, RequestsPublishedWhileAgentIsDownAreServedAfterRestart) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port());  // the same client id for both runs
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  observer->publish("provision/first01/request", R"({"request_id":"first"})");
  auto first = wait_response(*observer, "first01", "first");
  ASSERT_TRUE(first) << "the first request was not served";

  EXPECT_EQ(agent.stop(), 0) << "SIGTERM is a clean stop";
  auto offline = observer->wait_for(agent.status_topic(), 10s, [](const Message& message) {
    return is_status(message, "offline");
  });
  EXPECT_TRUE(offline) << "no offline status after SIGTERM";

  constexpr int kQueued = 20;
  for (int i = 0; i < kQueued; ++i) {
    observer->publish(fmt::format("provision/queued{:02}/request", i),
                      fmt::format(R"({{"request_id":"queued-{}"}})", i), 1);
  }

  observer->clear();
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << "the restarted agent published no online status";
  for (int i = 0; i < kQueued; ++i) {
    const std::string device = fmt::format("queued{:02}", i);
    auto response = wait_response(*observer, device, fmt::format("queued-{}", i), 60s);
    ASSERT_TRUE(response) << "request " << i << " published while the agent was down was lost";
    EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok") << response->payload;
    EXPECT_TRUE(file_exists(agent.device_dir(device) + "/sensor_private.pem")) << device;
  }
  std::size_t folders = 0;
  for (const auto& entry : list_tree(agent.keys_dir())) {
    if (entry.rfind("queued", 0) == 0 && entry.find('/') == std::string::npos) ++folders;
  }
  EXPECT_EQ(folders, static_cast<std::size_t>(kQueued));
  EXPECT_EQ(agent.stop(), 0);
}

TEST(AgentSession, BrokerWillMarksKilledAgentOffline) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port());
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  agent.kill();  // no chance to say goodbye: the broker's will speaks for it
  auto offline = observer->wait_for(agent.status_topic(), 10s, [](const Message& message) {
    return is_status(message, "offline");
  });
  EXPECT_TRUE(offline) << "no offline status from the will after SIGKILL";

  MqttClient late(broker.port());
  late.subscribe(agent.status_topic());
  auto retained = late.wait_for(agent.status_topic(), 10s);
  ASSERT_TRUE(retained);
  EXPECT_TRUE(is_status(*retained, "offline")) << "retained status: " << retained->payload;
}

TEST(AgentSession, ReconnectsAfterBrokerRestart) {
  Broker broker;  // no persistence: the restarted broker knows nothing of the old session
  auto observer = make_observer(broker.port());
  Agent agent(broker.port());
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  observer->publish("provision/before01/request", R"({"request_id":"before"})");
  ASSERT_TRUE(wait_response(*observer, "before01", "before"));

  observer.reset();
  broker.stop();
  // The agent notices the broker is gone and keeps running (never fatal).
  ASSERT_FALSE(agent.wait_exit(1500ms)) << "the agent exited when the broker went away";
  broker.start();

  observer = make_observer(broker.port());
  ASSERT_TRUE(wait_online(*observer, agent, 20s))
      << "the agent did not reconnect to the restarted broker";
  observer->publish("provision/after01/request", R"({"request_id":"after"})");
  auto after = wait_response(*observer, "after01", "after");
  ASSERT_TRUE(after) << "a request after the broker restart was not served";
  EXPECT_EQ(json_string(parse_json(after->payload), "status"), "ok") << after->payload;
  EXPECT_TRUE(file_exists(agent.device_dir("after01") + "/sensor_private.pem"));
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace pa::test
