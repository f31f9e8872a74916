// TLS to the broker and password authentication (SPEC sections 2 and 3), with a CA and a server
// certificate made by openssl in the test.
#include <gtest/gtest.h>

#include <regex>
#include <sstream>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

constexpr const char* kUser = "agent-user";
constexpr const char* kPassword = "c0rrect horse";

class AgentTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BrokerOptions options;
    options.tls = Broker::make_tls_files(certificates);
    options.user_password = {{kUser, kPassword}};
    tls = *options.tls;
    broker.emplace(std::move(options));
    MqttClientOptions client;
    client.ca_file = tls.ca_cert;
    client.username = kUser;
    client.password = kPassword;
    observer = make_observer(broker->port(), client);
  }

  std::map<std::string, std::string> tls_env() const {
    return {{"MQTT_USE_TLS", "true"}, {"MQTT_CA_CERTS", tls.ca_cert}, {"MQTT_USER", kUser}};
  }

  void expect_served(Agent& agent, const std::string& device) {
    ASSERT_TRUE(wait_online(*observer, agent)) << "the agent did not connect over TLS";
    observer->publish("provision/" + device + "/request", R"({"request_id":"tls-1"})");
    auto response = wait_response(*observer, device, "tls-1");
    ASSERT_TRUE(response) << "no response over TLS";
    EXPECT_EQ(json_string(parse_json(response->payload), "status"), "ok") << response->payload;
    EXPECT_TRUE(file_exists(agent.device_dir(device) + "/sensor_private.pem"));
    EXPECT_EQ(agent.stop(), 0);
  }

  TempDir certificates;
  TlsFiles tls;
  std::optional<Broker> broker;
  std::unique_ptr<MqttClient> observer;
};

TEST_F(AgentTlsTest, ServesRequestOverTlsWithPassword) {
  auto env = tls_env();
  env["MQTT_PASSWORD"] = kPassword;
  Agent agent(broker->port(), env);
  agent.start();
  expect_served(agent, "tls01");
}

TEST_F(AgentTlsTest, PasswordFileWinsOverPassword) {
  const std::string password_file = certificates.file("mqtt_password");
  write_file(password_file, kPassword, 0600);
  auto env = tls_env();
  env["MQTT_PASSWORD_FILE"] = password_file;
  env["MQTT_PASSWORD"] = "not-the-password";
  Agent agent(broker->port(), env);
  agent.start();
  expect_served(agent, "tls02");
}

TEST_F(AgentTlsTest, WrongPasswordIsNotFatal) {
  auto env = tls_env();
  env["MQTT_PASSWORD"] = "wrong password";
  Agent agent(broker->port(), env);
  agent.start();
  // Refused credentials are retried, never fatal (SPEC section 3): still running after a while.
  EXPECT_FALSE(agent.wait_exit(3s)) << "the agent exited when the broker refused its password";
  observer->publish("provision/tls03/request", R"({"request_id":"tls-3"})");
  EXPECT_FALSE(observer->wait_for("provision/tls03/response", 2s))
      << "answered without valid credentials";
  EXPECT_FALSE(observer->wait_for(agent.status_topic(), 0ms)) << "online without credentials";
  EXPECT_FALSE(file_exists(agent.device_dir("tls03")));
  EXPECT_TRUE(agent.running());
  EXPECT_EQ(agent.stop(), 0) << "SIGTERM while not connected is a clean stop";

  // The operator learns why, once per change of state rather than once per attempt.
  std::size_t reason_lines = 0;
  std::istringstream log(agent.log());
  for (std::string line; std::getline(log, line);) {
    if (std::regex_search(line, std::regex("authori|credential|password", std::regex::icase))) {
      ++reason_lines;
    }
  }
  EXPECT_EQ(reason_lines, 1u) << "the refusal should be logged once:\n" << agent.log();
}

TEST_F(AgentTlsTest, UntrustedServerCertificateIsRefused) {
  TempDir other;
  TlsFiles other_ca = Broker::make_tls_files(other);  // a CA that did not sign the broker
  auto env = tls_env();
  env["MQTT_PASSWORD"] = kPassword;
  env["MQTT_CA_CERTS"] = other_ca.ca_cert;
  Agent agent(broker->port(), env);
  agent.start();
  EXPECT_FALSE(wait_online(*observer, agent, 3s)) << "connected to a broker it cannot trust";
  observer->publish("provision/tls04/request", R"({"request_id":"tls-4"})");
  EXPECT_FALSE(observer->wait_for("provision/tls04/response", 1s));
  EXPECT_FALSE(file_exists(agent.device_dir("tls04")));
  EXPECT_TRUE(agent.running()) << "an untrusted broker must not be fatal either";
  EXPECT_EQ(agent.stop(), 0);
}

}  // namespace
}  // namespace pa::test
