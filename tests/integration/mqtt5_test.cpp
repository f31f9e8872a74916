// MQTT 5 (SPEC sections 2, 3.3, 3.4 and 3.5): with MQTT_PROTOCOL=5 the session still outlives the
// agent (session expiry); a request carrying a Response Topic under the provision base and
// Correlation Data is also answered there with the same correlation data, and any other Response
// Topic is ignored; a request whose Message Expiry passes while it waits is answered expired. The
// requester is mosquitto_pub/mosquitto_sub speaking v5.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <thread>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

std::string v5_publish(int port, const std::string& topic, const std::string& payload,
                       const std::string& properties = "") {
  return fmt::format("mosquitto_pub -V 5 -h 127.0.0.1 -p {} -q 1 -t {} -m {} {}", port,
                     shell_quote(topic), shell_quote(payload), properties);
}

TEST(AgentMqtt5, AnswersOnTheResponseTopicWithTheCorrelationData) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"MQTT_PROTOCOL", "5"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();

  // A v5 subscriber that prints topic | correlation data | payload.
  V5Subscriber subscriber(broker.port(), "provision/server/replies/7", "%t|%D|%p");
  ASSERT_TRUE(subscriber.wait_subscribed()) << "the v5 subscriber never subscribed";

  const auto sent = run_command(v5_publish(
      broker.port(), "provision/v5dev/request", R"({"request_id":"v5-1","user_id":"7"})",
      "-D publish response-topic provision/server/replies/7 -D publish correlation-data corr-42"));
  ASSERT_EQ(sent.exit_code, 0) << sent.output;

  auto response = wait_response(*observer, "v5dev", "v5-1");
  ASSERT_TRUE(response) << agent.log();
  EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok");

  ASSERT_TRUE(subscriber.wait_exit(30s)) << "no reply on the Response Topic";
  std::string reply = subscriber.output();
  reply = reply.substr(reply.find('\n') + 1);  // drop the probe line
  while (!reply.empty() && reply.back() == '\n') reply.pop_back();
  const auto first = reply.find('|'), second = reply.find('|', first + 1);
  ASSERT_NE(second, std::string::npos) << reply;
  EXPECT_EQ(reply.substr(0, first), "provision/server/replies/7");
  EXPECT_EQ(reply.substr(first + 1, second - first - 1), "corr-42");
  auto body = parse_json(reply.substr(second + 1));
  EXPECT_EQ(json_string(body, "request_id"), "v5-1");
  EXPECT_EQ(json_string(body, "status"), "ok");
  EXPECT_EQ(json_string(body, "device_id"), "v5dev");
  EXPECT_EQ(agent.stop(), 0);
}

// What was measured on ca1caa2: a Response Topic made the agent publish attacker-chosen text on
// any topic it may write, keys/<victim>/public too (SPEC 3.5).
TEST(AgentMqtt5, ResponseTopicOutsideTheProvisionBaseIsIgnored) {
  Broker broker;
  auto observer = make_observer(broker.port());
  observer->subscribe("provision/#");
  Agent agent(broker.port(), {{"MQTT_PROTOCOL", "5"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent)) << agent.log();

  struct Case {
    std::string device, response_topic, correlation;
  };
  const std::vector<Case> cases = {
      {"rt1", "keys/victim/public", "c"},       // outside the provision base
      {"rt2", "provision/victim/delete", "c"},  // a request topic: would be obeyed
      {"rt3", "provision/victim/update", "c"},
      {"rt4", "provision/agents/someone/status", "c"},         // an agent's own status
      {"rt5", "provision/fine/reply", std::string(257, 'x')},  // correlation data too long
  };
  for (const Case& c : cases) {
    const auto sent = run_command(
        v5_publish(broker.port(), "provision/" + c.device + "/request",
                   fmt::format(R"({{"request_id":"{}","action":"publish_key"}})", c.device),
                   fmt::format("-D publish response-topic {} -D publish correlation-data {}",
                               shell_quote(c.response_topic), shell_quote(c.correlation))));
    ASSERT_EQ(sent.exit_code, 0) << sent.output;
  }
  for (const Case& c : cases) {
    auto response = wait_response(*observer, c.device, c.device);
    ASSERT_TRUE(response) << c.device;
    EXPECT_EQ(error_code(parse_json(response->payload)), "not_found") << response->payload;
  }
  // A last, normal request answered proves the earlier replies are all out.
  observer->publish("provision/rt9/request", R"({"request_id":"rt9"})");
  ASSERT_TRUE(wait_response(*observer, "rt9", "rt9"));
  EXPECT_TRUE(observer->messages("keys/victim/public").empty());
  for (const char* topic : {"provision/victim/delete", "provision/victim/update",
                            "provision/agents/someone/status", "provision/fine/reply"})
    EXPECT_TRUE(observer->messages(topic).empty()) << topic;
  EXPECT_NE(agent.log().find("not answering on the Response Topic"), std::string::npos);
  EXPECT_EQ(agent.stop(), 0);
}

TEST(AgentMqtt5, SessionOutlivesTheAgent) {
  Broker broker;
  auto observer = make_observer(broker.port());
  Agent agent(broker.port(), {{"MQTT_PROTOCOL", "5"}});
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  EXPECT_EQ(agent.stop(), 0);

  // With MQTT 5 a session ends at disconnect unless the client asked for an expiry interval.
  for (int i = 0; i < 3; ++i)
    observer->publish(fmt::format("provision/v5q{}/request", i),
                      fmt::format(R"({{"request_id":"q-{}"}})", i));
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent));
  for (int i = 0; i < 3; ++i) {
    auto response = wait_response(*observer, fmt::format("v5q{}", i), fmt::format("q-{}", i));
    ASSERT_TRUE(response) << "request " << i << " sent while the v5 agent was down was lost";
    EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok");
  }
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace pa::test
