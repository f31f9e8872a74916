// The one MQTT client wrapper (agent/mqtt/client.hpp): what it takes from the configuration,
// which settings libmosquitto refuses and how, the private file an inline CA is written to, and a
// connection to nothing answering as a return code (no broker needed).
#include "mqtt/client.hpp"

#include <gtest/gtest.h>
#include <mosquitto.h>

#include <string>

#include "test_support.hpp"

namespace pa::mqtt {
namespace {

Config config_with(const std::map<std::string, std::string>& flags) {
  ConfigInputs inputs;
  inputs.flags = flags;
  return load_config(inputs);
}

TEST(MqttConnectionSettings, TheSessionsBrokerAndTheSharedSettings) {
  test::TempDir dir;
  test::write_file(dir.file("ca.pem"), "-----BEGIN CERTIFICATE-----\n");
  const Config config = config_with({{"MQTT_BROKER_URL", "mqtts://a.example:8884,mqtt://b.example"},
                                     {"MQTT_USER", "agent"},
                                     {"MQTT_PASSWORD", "s3cret"},
                                     {"MQTT_CA_CERTS", dir.file("ca.pem")},
                                     {"MQTT_KEEPALIVE", "20"},
                                     {"MQTT_PROTOCOL", "5"},
                                     {"MQTT_TLS_INSECURE", "yes"}});
  const ConnectionSettings first = connection_settings(config);
  EXPECT_EQ(first.host, "a.example");
  EXPECT_EQ(first.port, 8884);
  EXPECT_TRUE(first.tls);
  EXPECT_EQ(first.keepalive, 20);
  EXPECT_EQ(first.protocol, MqttProtocol::v5);
  EXPECT_EQ(first.user, "agent");
  EXPECT_EQ(first.password, "s3cret");
  EXPECT_EQ(first.ca_file, dir.file("ca.pem"));
  EXPECT_TRUE(first.tls_insecure);
  EXPECT_TRUE(first.tcp_nodelay);
  const ConnectionSettings second = connection_settings(config, 1);
  EXPECT_EQ(second.host, "b.example");
  EXPECT_EQ(second.port, 1883);
  EXPECT_FALSE(second.tls);
  EXPECT_EQ(second.user, "agent");  // one account for every broker of the list
}

TEST(MqttClient, AnUnreadableCaIsATlsFilesErrorNamingIt) {
  Client client("pa-test-client", true, nullptr);
  ConnectionSettings settings;
  settings.tls = true;
  settings.ca_file = "/nonexistent/ca.pem";
  try {
    client.configure(settings);
    FAIL() << "accepted";
  } catch (const ConnectionSettingError& error) {
    EXPECT_EQ(error.setting, ConnectionSettingError::Setting::tls_files);
    EXPECT_EQ(error.rc, MOSQ_ERR_INVAL);
    EXPECT_EQ(std::string(error.what()).rfind("invalid MQTT_CA_CERTS=\"/nonexistent/ca.pem\": ", 0),
              0u)
        << error.what();
  }
}

TEST(MqttClient, AUserNameThatIsNotUtf8IsACredentialsError) {
  Client client("pa-test-client", true, nullptr);
  ConnectionSettings settings;
  settings.user = std::string("\xff\xfe");
  try {
    client.configure(settings);
    FAIL() << "accepted";
  } catch (const ConnectionSettingError& error) {
    EXPECT_EQ(error.setting, ConnectionSettingError::Setting::credentials);
  }
}

TEST(MqttClient, ConnectingToAPortNobodyListensOnIsRefused) {
  Client client("pa-test-client", true, nullptr);
  ConnectionSettings settings;
  settings.host = "127.0.0.1";
  settings.port = test::free_port();
  client.configure(settings);
  EXPECT_EQ(client.settings().port, settings.port);
  EXPECT_EQ(client.connect(), MOSQ_ERR_ERRNO);
  EXPECT_EQ(describe_rc(MOSQ_ERR_NOMEM), "Out of memory.");
}

TEST(MqttTemporaryFile, PrivateWhileOwnedAndGoneAfter) {
  std::string path;
  {
    const test::TempDir dir;
    TemporaryFile file(dir.file("ca-XXXXXX"), "PEM");
    path = file.path();
    EXPECT_EQ(test::read_file(path), "PEM");
    EXPECT_EQ(test::file_mode(path), 0600);
    TemporaryFile moved = std::move(file);
    EXPECT_TRUE(file.path().empty());
    EXPECT_EQ(moved.path(), path);
    EXPECT_TRUE(test::file_exists(path));
  }
  EXPECT_FALSE(test::file_exists(path));
  EXPECT_THROW(TemporaryFile("/nonexistent/ca-XXXXXX", "PEM"), std::system_error);
}

}  // namespace
}  // namespace pa::mqtt
