// The agent on RabbitMQ's MQTT plugin (SPEC 3.6: brokers other than mosquitto that speak MQTT
// 3.1.1), Debian's rabbitmq-server 3.10: request, key files, response, the retained key on its
// exact topic, status and will, a persistent session across an agent restart, and a clear word
// when MQTT_PROTOCOL=5 meets this 3.1.1-only broker. The test starts its own RabbitMQ node on
// 127.0.0.1 (its own epmd, Mnesia, logs and configuration in a temporary folder, free ports for
// AMQP, MQTT, epmd and distribution) and stops every process it started by PID.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <sys/stat.h>

#include <iostream>
#include <memory>
#include <thread>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

constexpr const char* kRabbitBin = "/usr/lib/rabbitmq/bin";

class RabbitNode {
 public:
  RabbitNode()
      : epmd_port_(free_port()),
        amqp_port_(free_port()),
        mqtt_port_(free_port()),
        dist_port_(free_port()) {
    ::mkdir(dir_.file("home").c_str(), 0700);
    write_file(dir_.file("rabbitmq.conf"),
               fmt::format("listeners.tcp.default = 127.0.0.1:{}\n"
                           "mqtt.listeners.tcp.default = 127.0.0.1:{}\n"
                           "mqtt.allow_anonymous = true\n"
                           "management_agent.disable_metrics_collector = true\n",
                           amqp_port_, mqtt_port_));
    env_ = {
        {"HOME", dir_.file("home")},
        {"PATH", "/usr/bin:/bin:/usr/sbin:/sbin"},
        {"ERL_EPMD_PORT", std::to_string(epmd_port_)},
        {"ERL_EPMD_ADDRESS", "127.0.0.1"},
        {"RABBITMQ_NODENAME", unique_name("pa-it-") + "@localhost"},
        {"RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1"},
        {"RABBITMQ_NODE_PORT", std::to_string(amqp_port_)},
        {"RABBITMQ_DIST_PORT", std::to_string(dist_port_)},
        {"RABBITMQ_MNESIA_BASE", dir_.file("mnesia")},
        {"RABBITMQ_LOG_BASE", dir_.file("log")},
        {"RABBITMQ_CONFIG_FILE", dir_.file("rabbitmq")},
        {"RABBITMQ_ADVANCED_CONFIG_FILE", dir_.file("advanced.config")},
        {"RABBITMQ_CONF_ENV_FILE", dir_.file("rabbitmq-env.conf")},
        {"RABBITMQ_ENABLED_PLUGINS_FILE", dir_.file("enabled_plugins")},
        {"RABBITMQ_PID_FILE", dir_.file("rabbitmq.pid")},
        // The distribution listener on loopback too (it binds every address otherwise).
        {"RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS", "-kernel inet_dist_use_interface {127,0,0,1}"},
        // The script execs the Erlang VM itself, so the PID we hold is the node's.
        {"RUNNING_UNDER_SYSTEMD", "1"},
    };
    const auto started = std::chrono::steady_clock::now();
    ProcessOptions epmd_options;
    epmd_options.env = env_;
    epmd_options.clean_env = true;
    epmd_.emplace(std::vector<std::string>{"/usr/bin/epmd", "-port", std::to_string(epmd_port_),
                                           "-address", "127.0.0.1"},
                  epmd_options);
    if (!wait_for_port(epmd_port_, 10s)) throw std::runtime_error("epmd did not listen");
    std::string command = "env -i";
    for (const auto& [name, value] : env_) command += " " + shell_quote(name + "=" + value);
    const CommandResult plugins = run_command(
        command + " " + kRabbitBin + "/rabbitmq-plugins enable --offline rabbitmq_mqtt 2>&1");
    if (plugins.exit_code != 0)
      throw std::runtime_error("rabbitmq-plugins enable --offline failed:\n" + plugins.output);
    ProcessOptions node_options;
    node_options.env = env_;
    node_options.clean_env = true;
    node_options.working_dir = dir_.path();
    node_.emplace(std::vector<std::string>{std::string(kRabbitBin) + "/rabbitmq-server"},
                  node_options);
    if (!wait_for_port(mqtt_port_, 120s))
      throw std::runtime_error("RabbitMQ's MQTT listener did not come up:\n" + node_->log());
    startup_ = std::chrono::steady_clock::now() - started;
  }
  ~RabbitNode() {
    if (node_) node_->stop(60s);
    if (epmd_) epmd_->stop(5s);
  }

  int mqtt_port() const { return mqtt_port_; }
  double startup_seconds() const { return std::chrono::duration<double>(startup_).count(); }

 private:
  TempDir dir_;
  int epmd_port_, amqp_port_, mqtt_port_, dist_port_;
  std::map<std::string, std::string> env_;
  std::optional<Process> epmd_;
  std::optional<Process> node_;
  std::chrono::steady_clock::duration startup_{};
};

class RabbitMqTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const auto started = std::chrono::steady_clock::now();
    node_ = std::make_unique<RabbitNode>();
    std::cout << fmt::format("RabbitMQ node up in {:.1f} s (MQTT on 127.0.0.1:{})\n",
                             node_->startup_seconds(), node_->mqtt_port());
    suite_started_ = started;
  }
  static void TearDownTestSuite() {
    node_.reset();
    std::cout << fmt::format(
        "RabbitMQ suite took {:.1f} s\n",
        std::chrono::duration<double>(std::chrono::steady_clock::now() - suite_started_).count());
  }
  static std::unique_ptr<RabbitNode> node_;
  static std::chrono::steady_clock::time_point suite_started_;
};
std::unique_ptr<RabbitNode> RabbitMqTest::node_;
std::chrono::steady_clock::time_point RabbitMqTest::suite_started_;

bool has_status(const Message& message, const std::string& status) {
  auto json = parse_json(message.payload);
  return !json.HasParseError() && json_string(json, "status") == status;
}

bool wait_log(const Agent& agent, const std::string& part, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (agent.log().find(part) == std::string::npos) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(100ms);
  }
  return true;
}

TEST_F(RabbitMqTest, RequestKeyResponseRetainedKeyStatusAndWill) {
  const int port = node_->mqtt_port();
  auto observer = make_observer(port);
  Agent agent(port);
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent, 60s)) << agent.log();
  observer->publish("provision/rmq01/request", R"({"request_id":"r-1"})");
  auto response = wait_response(*observer, "rmq01", "r-1");
  ASSERT_TRUE(response) << agent.log();
  EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok") << response->payload;
  EXPECT_TRUE(file_exists(agent.device_dir("rmq01") + "/sensor_private.pem"));
  const std::string fingerprint = json_string(parse_json(response->payload), "fingerprint");

  // Retained, on the exact topics (RabbitMQ 3.10 keeps no retained message for wildcards).
  MqttClient late(port);
  late.subscribe("keys/rmq01/public");
  auto key = late.wait_for("keys/rmq01/public", 10s);
  ASSERT_TRUE(key) << "no retained key";
  EXPECT_TRUE(key->retain);
  EXPECT_EQ(json_string(parse_json(key->payload), "fingerprint"), fingerprint);
  late.subscribe(agent.status_topic());
  auto status = late.wait_for(agent.status_topic(), 10s);
  ASSERT_TRUE(status) << "no retained status";
  EXPECT_TRUE(has_status(*status, "online")) << status->payload;
  EXPECT_EQ(json_string(parse_json(status->payload), "broker"), fmt::format("127.0.0.1:{}", port));

  agent.kill();  // the will speaks for it
  EXPECT_TRUE(observer->wait_for(agent.status_topic(), 30s, [](const Message& m) {
    return has_status(m, "offline");
  })) << "no offline status from the will";
}

TEST_F(RabbitMqTest, SessionOutlivesAnAgentRestart) {
  const int port = node_->mqtt_port();
  auto observer = make_observer(port);
  Agent agent(port);
  agent.start();
  ASSERT_TRUE(wait_online(*observer, agent, 60s)) << agent.log();
  EXPECT_EQ(agent.stop(), 0);
  for (int i = 0; i < 3; ++i)
    observer->publish(fmt::format("provision/rmqq{}/request", i),
                      fmt::format(R"({{"request_id":"q-{}"}})", i));
  observer->clear();
  agent.start();
  auto online = observer->wait_for(agent.status_topic(), 60s,
                                   [](const Message& m) { return has_status(m, "online"); });
  ASSERT_TRUE(online) << agent.log();
  EXPECT_EQ(json_string(parse_json(online->payload), "session"), "resumed") << online->payload;
  for (int i = 0; i < 3; ++i) {
    auto response = wait_response(*observer, fmt::format("rmqq{}", i), fmt::format("q-{}", i));
    ASSERT_TRUE(response) << "request " << i << " sent while the agent was down was lost\n"
                          << agent.log();
    EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok");
  }
  EXPECT_EQ(agent.stop(), 0);
}

TEST_F(RabbitMqTest, Mqtt5IsRefusedWithAClearMessage) {
  const int port = node_->mqtt_port();
  Agent agent(port, {{"MQTT_PROTOCOL", "5"}});
  agent.start();
  EXPECT_TRUE(wait_log(agent, "the broker refused MQTT 5: set MQTT_PROTOCOL=3.1.1", 60s))
      << agent.log();
  EXPECT_EQ(agent.stop(), 0);
  std::string command = "env -i PATH=/usr/bin:/bin";
  for (const auto& [name, value] : agent.env()) command += " " + shell_quote(name + "=" + value);
  const CommandResult check = run_command(command + " " + agent_shell_command() + " check 2>&1");
  EXPECT_EQ(check.exit_code, 1) << check.output;
  EXPECT_NE(
      check.output.find(fmt::format("FAIL broker 127.0.0.1:{}: the broker refused MQTT 5", port)),
      std::string::npos)
      << check.output;
}

}  // namespace
}  // namespace pa::test
