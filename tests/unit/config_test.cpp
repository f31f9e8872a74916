// Configuration (SPEC section 2) as an operator meets it: sources and their precedence, env-file
// and broker-config syntax, and one clear line for every invalid value.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "test_support.hpp"

namespace {

namespace fs = std::filesystem;
using pa::Config;
using pa::ConfigError;
using pa::ConfigInputs;
using pa::ConfigSource;
using pa::load_config;
namespace test = pa::test;

// Writes `content` to `name` in `dir` and returns the file's path.
std::string write_in(const test::TempDir& dir, const std::string& name,
                     const std::string& content) {
  const std::string path = dir.file(name);
  test::write_file(path, content);
  return path;
}

// Sets or unsets one process environment variable for a test's lifetime.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// The error line load_config gives for these inputs, or "" when it succeeds.
std::string error_of(const ConfigInputs& inputs) {
  try {
    load_config(inputs);
  } catch (const ConfigError& error) {
    return error.what();
  }
  return "";
}

ConfigInputs with_flag(const std::string& name, const std::string& value) {
  ConfigInputs inputs;
  inputs.flags[name] = value;
  return inputs;
}

TEST(ConfigVariables, FollowTheSpecOrderWithLongFlags) {
  const auto& variables = pa::config_variables();
  // Every variable of SPEC section 2 (plugins declare their own options).
  ASSERT_EQ(variables.size(), 40u);
  EXPECT_STREQ(variables.front().env, "MQTT_BROKER_URL");
  EXPECT_STREQ(variables.front().flag, "--broker-url");
  EXPECT_STREQ(variables[1].env, "MQTT_HOST");
  EXPECT_STREQ(variables[1].flag, "--mqtt-host");
  EXPECT_STREQ(variables[1].help, "broker host");
  EXPECT_EQ(variables[1].default_text(), "localhost");
  EXPECT_STREQ(variables.back().env, "LOG_LEVEL");
  EXPECT_STREQ(variables.back().flag, "--log-level");
  std::set<std::string> flags;
  for (const auto& variable : variables) {
    EXPECT_EQ(variable.secret, std::string(variable.env) == "MQTT_PASSWORD") << variable.env;
    EXPECT_EQ(std::string(variable.flag).rfind("--", 0), 0u) << variable.env;
    EXPECT_TRUE(flags.insert(variable.flag).second) << variable.flag << " twice";
    // The default lives in its own column now, written once; help is what the variable is.
    EXPECT_FALSE(std::string(variable.help).empty()) << variable.env;
    EXPECT_EQ(std::string(variable.help).find("(default"), std::string::npos) << variable.env;
    EXPECT_FALSE(variable.default_text().empty()) << variable.env;
  }
  const auto keys_dir = std::find_if(variables.begin(), variables.end(), [](const auto& v) {
    return std::string(v.env) == "PROVISION_KEYS_DIR";
  });
  ASSERT_NE(keys_dir, variables.end());
  EXPECT_STREQ(keys_dir->flag, "--keys-dir");
}

// What --help, the README and agent.env show is read from the rows.
TEST(ConfigVariables, DefaultsRangesAndChoicesForTheDocumentation) {
  const auto row = [](const char* name) { return *pa::find_config_variable(name); };
  EXPECT_EQ(row("MQTT_KEEPALIVE").default_text(), "60");
  EXPECT_EQ(row("MQTT_KEEPALIVE").range_text(), "5..65535 seconds");
  EXPECT_EQ(row("MQTT_PORT").default_text(), "1883, or 8883 with TLS");
  EXPECT_EQ(row("MQTT_PORT").default_value, "1883");
  EXPECT_EQ(row("MQTT_PROTOCOL").range_text(), "3.1.1 or 5");
  EXPECT_EQ(row("LOG_LEVEL").range_text(), "debug, info, warning or error");
  EXPECT_EQ(row("PROVISION_KEY_TYPE").range_text(),
            "rsa-2048, rsa-3072, rsa-4096, ec-p256 or ed25519");
  EXPECT_EQ(row("PROVISION_WORKERS").default_text(), "the number of CPUs");
  EXPECT_EQ(row("PROVISION_KEY_MAX_AGE").range_text(), "1s..36500d");
  EXPECT_EQ(row("MQTT_USER").default_text(), "unset");
  EXPECT_STREQ(row("PROVISION_KEY_GROUP").package_value, "provision-keys");
  EXPECT_EQ(row("PROVISION_CSR").kind, pa::VariableKind::boolean);
  EXPECT_EQ(pa::find_config_variable("NOT_A_VARIABLE"), nullptr);
}

// A default-constructed Config holds the table's defaults: the defaults have one home.
TEST(ConfigLoad, DefaultConstructedConfigHoldsTheTablesDefaults) {
  ScopedEnv state("STATE_DIRECTORY", nullptr);
  const Config built;
  const Config loaded = load_config({});
  EXPECT_EQ(built.mqtt_host, loaded.mqtt_host);
  EXPECT_EQ(built.mqtt_port, loaded.mqtt_port);
  EXPECT_EQ(built.mqtt_keepalive, loaded.mqtt_keepalive);
  EXPECT_EQ(built.session_expiry, loaded.session_expiry);
  EXPECT_EQ(built.max_skew, loaded.max_skew);
  EXPECT_EQ(built.queue_max, loaded.queue_max);
  EXPECT_EQ(built.max_payload, loaded.max_payload);
  EXPECT_EQ(built.max_devices, loaded.max_devices);
  EXPECT_EQ(built.key_pool, loaded.key_pool);
  EXPECT_EQ(built.devices, loaded.devices);
  EXPECT_EQ(built.retain_keys, loaded.retain_keys);
  EXPECT_EQ(built.key_type, loaded.key_type);
  EXPECT_EQ(built.e2ee_policy, loaded.e2ee_policy);
  EXPECT_EQ(built.key_format, loaded.key_format);
  EXPECT_EQ(built.log_level, loaded.log_level);
  EXPECT_EQ(built.mqtt_protocol, loaded.mqtt_protocol);
  EXPECT_EQ(built.provision_topic_base, loaded.provision_topic_base);
  EXPECT_EQ(built.keys_topic_base, loaded.keys_topic_base);
}

TEST(ConfigLoad, DefaultsWhenNothingIsGiven) {
  ScopedEnv state("STATE_DIRECTORY", nullptr);
  const Config config = load_config({});
  EXPECT_EQ(config.mqtt_host, "localhost");
  EXPECT_EQ(config.mqtt_port, 1883);
  EXPECT_FALSE(config.mqtt_use_tls);
  EXPECT_FALSE(config.mqtt_user);
  EXPECT_FALSE(config.mqtt_password);
  EXPECT_EQ(config.mqtt_keepalive, 60);
  EXPECT_EQ(config.mqtt_protocol, pa::MqttProtocol::v311);
  EXPECT_EQ(config.mqtt_client_id.rfind("provision-agent-", 0), 0u);
  EXPECT_EQ(config.provision_topic_base, "provision");
  EXPECT_EQ(config.keys_topic_base, "keys");
  EXPECT_EQ(config.keys_dir, (fs::current_path() / "sensor_keys").string());
  EXPECT_FALSE(config.plugin_dir.empty());
  EXPECT_EQ(config.key_type, pa::keystore::KeyType::rsa2048);
  EXPECT_GE(config.workers, 1);
  EXPECT_EQ(config.queue_max, 1024);
  EXPECT_EQ(config.max_payload, 65536);
  EXPECT_EQ(config.e2ee_policy, pa::E2eePolicy::destructive);
  EXPECT_EQ(config.max_skew, 300);
  EXPECT_EQ(config.devices, std::vector<std::string>{"*"});
  EXPECT_TRUE(config.retain_keys);
  EXPECT_EQ(config.key_format, pa::KeyFormat::json);
  EXPECT_EQ(config.log_level, pa::LogLevel::info);
  EXPECT_FALSE(config.csr);
  EXPECT_FALSE(config.ca_file);
  EXPECT_FALSE(config.key_max_age_seconds);
  EXPECT_EQ(config.key_pool, 2);
  EXPECT_FALSE(config.metrics_file);
  EXPECT_EQ(config.brokers, (std::vector<pa::BrokerAddress>{{"localhost", 1883, false}}));

  ASSERT_EQ(config.entries.size(), pa::config_variables().size());
  const auto& host = config.entries.at("MQTT_HOST");
  EXPECT_FALSE(host.set);
  EXPECT_EQ(host.source, ConfigSource::default_value);
  EXPECT_EQ(host.value, "localhost");
  EXPECT_EQ(config.entries.at("MQTT_PORT").value, "1883");
  EXPECT_EQ(config.entries.at("PROVISION_WORKERS").value, std::to_string(config.workers));
  EXPECT_EQ(config.entries.at("MQTT_CLIENT_ID").value, config.mqtt_client_id);
  EXPECT_EQ(config.entries.at("MQTT_USER").value, "");
  EXPECT_FALSE(config.entries.at("MQTT_USER").set);
}

TEST(ConfigSources, EachSourceAloneSetsTheValue) {
  test::TempDir dir;
  {
    const Config config = load_config(with_flag("MQTT_HOST", "flag.example"));
    EXPECT_EQ(config.mqtt_host, "flag.example");
    EXPECT_EQ(config.entries.at("MQTT_HOST").source, ConfigSource::flag);
    EXPECT_TRUE(config.entries.at("MQTT_HOST").set);
  }
  {
    ConfigInputs inputs;
    inputs.environment["MQTT_HOST"] = "env.example";
    const Config config = load_config(inputs);
    EXPECT_EQ(config.mqtt_host, "env.example");
    EXPECT_EQ(config.entries.at("MQTT_HOST").source, ConfigSource::environment);
  }
  {
    ConfigInputs inputs;
    inputs.env_file = write_in(dir, "agent.env", "MQTT_HOST=file.example\n");
    const Config config = load_config(inputs);
    EXPECT_EQ(config.mqtt_host, "file.example");
    EXPECT_EQ(config.entries.at("MQTT_HOST").source, ConfigSource::env_file);
  }
  {
    const std::string json =
        write_in(dir, "broker.json", R"({"mqtt":{"brokerConfig":{"host":"json.example"}}})");
    const Config config = load_config(with_flag("MQTT_BROKER_CONFIG", json));
    EXPECT_EQ(config.mqtt_host, "json.example");
    EXPECT_EQ(config.entries.at("MQTT_HOST").source, ConfigSource::broker_config);
  }
}

TEST(ConfigPrecedence, FlagThenEnvironmentThenEnvFileThenBrokerConfigThenDefault) {
  test::TempDir dir;
  const std::string json =
      write_in(dir, "broker.json", R"({"mqtt":{"brokerConfig":{"port":1001}}})");
  ConfigInputs inputs;
  inputs.flags["MQTT_PORT"] = "1004";
  inputs.environment["MQTT_PORT"] = "1003";
  inputs.environment["MQTT_BROKER_CONFIG"] = json;
  inputs.env_file = write_in(dir, "agent.env", "MQTT_PORT=1002\n");

  auto port_and_source = [](const ConfigInputs& in) {
    const Config config = load_config(in);
    return std::pair{config.mqtt_port, config.entries.at("MQTT_PORT").source};
  };
  EXPECT_EQ(port_and_source(inputs), std::pair(1004, ConfigSource::flag));
  inputs.flags.clear();
  EXPECT_EQ(port_and_source(inputs), std::pair(1003, ConfigSource::environment));
  inputs.environment.erase("MQTT_PORT");
  EXPECT_EQ(port_and_source(inputs), std::pair(1002, ConfigSource::env_file));
  inputs.env_file.reset();
  EXPECT_EQ(port_and_source(inputs), std::pair(1001, ConfigSource::broker_config));
  inputs.environment.clear();
  EXPECT_EQ(port_and_source(inputs), std::pair(1883, ConfigSource::default_value));
}

// systemd's EnvironmentFile= rules (env_file_test.cpp has them all): no `export` prefix, and in
// double quotes only \" \\ \` \$ are unescaped ("\n" stays a backslash and an n).
TEST(ConfigEnvFile, ParsesQuotesCommentsBlankLinesAndSpacesAsSystemdDoes) {
  test::TempDir dir;
  const std::string path = write_in(dir, "agent.env",
                                    "# provision-agent settings\n"
                                    "; another comment\n"
                                    "\n"
                                    "   \n"
                                    "MQTT_HOST=broker.local\n"
                                    "  MQTT_USER  =  alice  \n"
                                    "export MQTT_PORT=1884\n"
                                    "MQTT_PASSWORD='se=cret # not a comment'\n"
                                    "LOG_LEVEL=\"de\\\"bug\\\\x\\nz\"\n"
                                    "EMPTY=\n"
                                    "SINGLE=' spaced '\r\n"
                                    "OTHER_SERVICE=kept\n"
                                    "LAST=no-newline");
  testing::internal::CaptureStderr();
  const auto values = pa::parse_env_file(path);
  const std::string logged = testing::internal::GetCapturedStderr();
  EXPECT_EQ(values.at("MQTT_HOST"), "broker.local");
  EXPECT_EQ(values.at("MQTT_USER"), "alice");
  EXPECT_EQ(values.count("MQTT_PORT"), 0u);
  EXPECT_NE(logged.find(path + " line 7: ignoring \"export MQTT_PORT\""), std::string::npos)
      << logged;
  EXPECT_EQ(values.at("MQTT_PASSWORD"), "se=cret # not a comment");
  EXPECT_EQ(values.at("LOG_LEVEL"), "de\"bug\\x\\nz");
  EXPECT_EQ(values.at("EMPTY"), "");
  EXPECT_EQ(values.at("SINGLE"), " spaced ");
  EXPECT_EQ(values.at("OTHER_SERVICE"), "kept");
  EXPECT_EQ(values.at("LAST"), "no-newline");
  EXPECT_EQ(values.size(), 8u);
}

// systemd ignores lines it cannot use (logging invalid names) and starts the service anyway, so
// `config` reads the rest too; the ignored lines are named in warnings.
TEST(ConfigEnvFile, LinesSystemdIgnoresAreWarningsNotErrors) {
  test::TempDir dir;
  const std::string path = write_in(dir, "agent.env",
                                    "# ok\nMQTT_HOST=a\nthis is not an assignment\nMY KEY=1\n"
                                    "MQTT_PORT=1884\n");
  ConfigInputs inputs;
  inputs.env_file = path;
  testing::internal::CaptureStderr();
  const Config config = load_config(inputs);
  const std::string logged = testing::internal::GetCapturedStderr();
  EXPECT_EQ(config.mqtt_host, "a");
  EXPECT_EQ(config.mqtt_port, 1884);
  EXPECT_NE(logged.find(path + " line 3: ignoring a line that is not NAME=VALUE"),
            std::string::npos)
      << logged;
  EXPECT_NE(logged.find(path + " line 4: ignoring \"MY KEY\""), std::string::npos) << logged;
}

// What systemd refuses whole (the unit would not start) stops start-up with exit 78's error.
TEST(ConfigEnvFile, FileSystemdRefusesNamesTheFileAndLine) {
  test::TempDir dir;
  const std::string path = write_in(dir, "agent.env", std::string("A=1\nMQTT_HOST=x\0y\n", 18));
  ConfigInputs inputs;
  inputs.env_file = path;
  const std::string error = error_of(inputs);
  EXPECT_NE(error.find("invalid env file " + path + " line 2: contains a NUL byte"),
            std::string::npos)
      << error;
}

TEST(ConfigEnvFile, UnreadableFileIsAConfigError) {
  test::TempDir dir;
  ConfigInputs inputs;
  inputs.env_file = dir.file("missing.env");
  const std::string error = error_of(inputs);
  EXPECT_NE(error.find(dir.file("missing.env")), std::string::npos) << error;
  EXPECT_NE(error.find("cannot read"), std::string::npos) << error;
}

TEST(ConfigEnvFile, UnknownKeysAreIgnoredByLoadConfig) {
  ScopedEnv state("STATE_DIRECTORY", nullptr);
  test::TempDir dir;
  ConfigInputs inputs;
  inputs.env_file = write_in(dir, "agent.env", "STATE_DIRECTORY=/nowhere\nSOMETHING_ELSE=1\n");
  const Config config = load_config(inputs);
  EXPECT_EQ(config.keys_dir, (fs::current_path() / "sensor_keys").string());
  EXPECT_EQ(config.entries.count("SOMETHING_ELSE"), 0u);
}

TEST(ConfigBrokerConfig, WrappedProvisioningResponse) {
  test::TempDir dir;
  const std::string json = write_in(dir, "broker.json", R"({
    "mqtt": {
      "username": "device_abc123",
      "password": "secure_password",
      "broker": "mqtt://ignored.example:1883",
      "brokerConfig": {
        "protocol": "mqtt", "host": "mqtt.example.com", "port": 5883, "useTls": false,
        "verifyCertificate": true, "clientIdPrefix": "zemfyre", "keepAlive": 30,
        "cleanSession": true, "reconnectPeriod": 1000, "connectTimeout": 30000
      },
      "topics": {"publish": ["iot/device/abc123/#"], "subscribe": ["iot/device/abc123/#"]}
    }
  })");
  const Config config = load_config(with_flag("MQTT_BROKER_CONFIG", json));
  EXPECT_EQ(config.mqtt_user, "device_abc123");
  EXPECT_EQ(config.mqtt_password, "secure_password");
  EXPECT_EQ(config.mqtt_host, "mqtt.example.com");  // explicit host beats the URL's (same rank)
  EXPECT_EQ(config.mqtt_port, 5883);
  EXPECT_FALSE(config.mqtt_use_tls);
  EXPECT_FALSE(config.mqtt_tls_insecure);
  EXPECT_EQ(config.mqtt_keepalive, 30);
  EXPECT_EQ(config.mqtt_client_id.rfind("zemfyre-", 0), 0u) << config.mqtt_client_id;
  EXPECT_FALSE(config.inline_ca_pem);
  EXPECT_EQ(config.entries.at("MQTT_USER").source, ConfigSource::broker_config);
  EXPECT_EQ(config.entries.at("MQTT_CLIENT_ID").source, ConfigSource::broker_config);
  EXPECT_EQ(config.entries.at("MQTT_BROKER_CONFIG").source, ConfigSource::flag);
}

TEST(ConfigBrokerConfig, BareMqttObjectWithMqttsImpliesTlsAndPort8883) {
  test::TempDir dir;
  const std::string json =
      write_in(dir, "broker.json", R"({"broker":"mqtts://secure.example","username":"u"})");
  const Config config = load_config(with_flag("MQTT_BROKER_CONFIG", json));
  EXPECT_EQ(config.mqtt_host, "secure.example");
  EXPECT_TRUE(config.mqtt_use_tls);
  EXPECT_EQ(config.mqtt_port, 8883);
  EXPECT_EQ(config.entries.at("MQTT_PORT").value, "8883");
  EXPECT_EQ(config.mqtt_user, "u");

  const std::string protocol_only = write_in(
      dir, "protocol.json", R"({"mqtt":{"brokerConfig":{"protocol":"mqtts","host":"h.example"}}})");
  const Config from_protocol = load_config(with_flag("MQTT_BROKER_CONFIG", protocol_only));
  EXPECT_TRUE(from_protocol.mqtt_use_tls);
  EXPECT_EQ(from_protocol.mqtt_port, 8883);
}

TEST(ConfigBrokerConfig, InlineCaCertAndVerifyCertificateFalse) {
  test::TempDir dir;
  const std::string pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  const std::string json = write_in(
      dir, "broker.json",
      R"({"mqtt":{"brokerConfig":{"useTls":true,"verifyCertificate":false,"caCert":")" +
          std::string("-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n") +
          R"("}}})");
  const Config config = load_config(with_flag("MQTT_BROKER_CONFIG", json));
  EXPECT_TRUE(config.mqtt_use_tls);
  EXPECT_TRUE(config.mqtt_tls_insecure);
  EXPECT_EQ(config.entries.at("MQTT_TLS_INSECURE").source, ConfigSource::broker_config);
  EXPECT_EQ(config.inline_ca_pem, pem);
  EXPECT_FALSE(config.mqtt_ca_certs);
  const auto lines = pa::describe_config(config);
  EXPECT_NE(std::find(lines.begin(), lines.end(), "MQTT_CA_CERTS=(inline caCert) (broker-config)"),
            lines.end());

  // An explicit CA file is stronger than the inline certificate.
  ConfigInputs inputs = with_flag("MQTT_BROKER_CONFIG", json);
  inputs.environment["MQTT_CA_CERTS"] = write_in(dir, "ca.pem", pem);
  const Config with_file = load_config(inputs);
  EXPECT_EQ(with_file.mqtt_ca_certs, dir.file("ca.pem"));
  EXPECT_FALSE(with_file.inline_ca_pem);
}

TEST(ConfigBrokerConfig, MalformedJsonAndWrongTypesNameTheFile) {
  test::TempDir dir;
  const std::string malformed = write_in(dir, "bad.json", R"({"mqtt": {"broker": )");
  std::string error = error_of(with_flag("MQTT_BROKER_CONFIG", malformed));
  EXPECT_NE(error.find("MQTT_BROKER_CONFIG=\"" + malformed + "\""), std::string::npos) << error;
  EXPECT_NE(error.find("malformed JSON"), std::string::npos) << error;

  const std::string wrong_type =
      write_in(dir, "type.json", R"({"mqtt":{"brokerConfig":{"port":"8883"}}})");
  error = error_of(with_flag("MQTT_BROKER_CONFIG", wrong_type));
  EXPECT_NE(error.find("MQTT_BROKER_CONFIG=\"" + wrong_type + "\""), std::string::npos) << error;
  EXPECT_NE(error.find("brokerConfig.port"), std::string::npos) << error;

  const std::string not_object = write_in(dir, "array.json", "[1,2]");
  EXPECT_NE(error_of(with_flag("MQTT_BROKER_CONFIG", not_object)).find("MQTT_BROKER_CONFIG"),
            std::string::npos);
  const std::string missing = dir.file("missing.json");
  EXPECT_NE(error_of(with_flag("MQTT_BROKER_CONFIG", missing)).find(missing), std::string::npos);
}

TEST(ConfigBrokerUrl, ExpandsIntoHostPortAndTls) {
  Config config = load_config(with_flag("MQTT_BROKER_URL", "mqtts://broker.example:9883"));
  EXPECT_EQ(config.mqtt_host, "broker.example");
  EXPECT_EQ(config.mqtt_port, 9883);
  EXPECT_TRUE(config.mqtt_use_tls);
  EXPECT_EQ(config.entries.at("MQTT_HOST").source, ConfigSource::flag);
  EXPECT_EQ(config.entries.at("MQTT_USE_TLS").value, "true");

  config = load_config(with_flag("MQTT_BROKER_URL", "mqtts://broker.example"));
  EXPECT_EQ(config.mqtt_port, 8883);
  config = load_config(with_flag("MQTT_BROKER_URL", "mqtt://broker.example/"));
  EXPECT_EQ(config.mqtt_port, 1883);
  EXPECT_FALSE(config.mqtt_use_tls);
  config = load_config(with_flag("MQTT_BROKER_URL", "mqtt://[::1]:1999"));
  EXPECT_EQ(config.mqtt_host, "::1");
  EXPECT_EQ(config.mqtt_port, 1999);
}

TEST(ConfigBrokerUrl, ExplicitValuesOfSameOrStrongerSourceWin) {
  ConfigInputs inputs;
  inputs.environment["MQTT_BROKER_URL"] = "mqtt://url.example:1111";
  inputs.environment["MQTT_PORT"] = "2222";  // same source: explicit wins
  Config config = load_config(inputs);
  EXPECT_EQ(config.mqtt_host, "url.example");
  EXPECT_EQ(config.mqtt_port, 2222);

  inputs.flags["MQTT_HOST"] = "flag.example";  // stronger source wins
  inputs.flags["MQTT_USE_TLS"] = "yes";
  config = load_config(inputs);
  EXPECT_EQ(config.mqtt_host, "flag.example");
  EXPECT_TRUE(config.mqtt_use_tls);
  EXPECT_EQ(config.mqtt_port, 2222);

  // A weaker explicit port loses to the URL's.
  test::TempDir dir;
  inputs = {};
  inputs.env_file = write_in(dir, "agent.env", "MQTT_PORT=3333\nMQTT_HOST=file.example\n");
  inputs.flags["MQTT_BROKER_URL"] = "mqtt://url.example:1111";
  config = load_config(inputs);
  EXPECT_EQ(config.mqtt_host, "url.example");
  EXPECT_EQ(config.mqtt_port, 1111);
}

// Every invalid value stops start-up with a line naming the variable and the value.
struct InvalidCase {
  const char* name;
  const char* value;
};

// Shows a case as NAME="value" in messages and in --gtest_list_tests.
void PrintTo(const InvalidCase& c, std::ostream* out) {
  *out << c.name << "=\"" << c.value << '"';
}

// Test names: the variable and the case's index (values repeat across variables and hold
// characters a test name may not), kept to [A-Za-z0-9_].
std::string invalid_case_name(const ::testing::TestParamInfo<InvalidCase>& info) {
  std::string name = std::string(info.param.name) + "_" + std::to_string(info.index);
  for (char& c : name) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0) c = '_';
  }
  return name;
}

class ConfigInvalidValue : public ::testing::TestWithParam<InvalidCase> {};

TEST_P(ConfigInvalidValue, NamesTheVariableAndTheValue) {
  const InvalidCase& c = GetParam();
  const std::string error = error_of(with_flag(c.name, c.value));
  ASSERT_FALSE(error.empty()) << c.name << "=" << c.value << " was accepted";
  EXPECT_EQ(error.rfind(std::string("invalid ") + c.name + "=\"" + c.value + "\": ", 0), 0u)
      << error;
  EXPECT_EQ(error.find('\n'), std::string::npos) << error;
}

INSTANTIATE_TEST_SUITE_P(
    ConfigValues, ConfigInvalidValue,
    ::testing::Values(
        InvalidCase{"MQTT_PORT", "abc"}, InvalidCase{"MQTT_PORT", "0"},
        InvalidCase{"MQTT_PORT", "70000"}, InvalidCase{"MQTT_PORT", "12abc"},
        InvalidCase{"MQTT_PORT", ""}, InvalidCase{"MQTT_USE_TLS", "maybe"},
        InvalidCase{"MQTT_TLS_INSECURE", "2"}, InvalidCase{"PROVISION_RETAIN_KEYS", "sometimes"},
        InvalidCase{"MQTT_CA_CERTS", "/nonexistent/ca.pem"},
        InvalidCase{"MQTT_PASSWORD_FILE", "/nonexistent/password"},
        InvalidCase{"PROVISION_SERVER_PUBKEY", "/nonexistent/server.pem"},
        InvalidCase{"PROVISION_KEY_TYPE", "rsa-1024"},
        InvalidCase{"PROVISION_E2EE_POLICY", "sometimes"}, InvalidCase{"LOG_LEVEL", "verbose"},
        InvalidCase{"MQTT_PROTOCOL", "4"}, InvalidCase{"MQTT_BROKER_URL", "http://x"},
        InvalidCase{"MQTT_BROKER_URL", "mqtt://"}, InvalidCase{"MQTT_BROKER_URL", "mqtt://h:0"},
        InvalidCase{"MQTT_BROKER_URL", "mqtt://h:port"}, InvalidCase{"MQTT_BROKER_URL", "broker"},
        InvalidCase{"MQTT_KEEPALIVE", "4"}, InvalidCase{"PROVISION_WORKERS", "0"},
        InvalidCase{"PROVISION_WORKERS", "257"}, InvalidCase{"PROVISION_QUEUE_MAX", "1000001"},
        InvalidCase{"PROVISION_MAX_PAYLOAD", "255"},
        InvalidCase{"PROVISION_MAX_PAYLOAD", "16777217"}, InvalidCase{"PROVISION_MAX_SKEW", "0"},
        InvalidCase{"PROVISION_MAX_SKEW", "86401"}, InvalidCase{"PROVISION_KEY_FORMAT", "der"},
        InvalidCase{"PROVISION_DEVICES", " , ,"}, InvalidCase{"MQTT_CLIENT_ID", "a/b"},
        InvalidCase{"MQTT_CLIENT_ID", "a+b"}, InvalidCase{"MQTT_CLIENT_ID", ""},
        InvalidCase{"MQTT_PROVISION_TOPIC_BASE", "/provision"},
        InvalidCase{"MQTT_PROVISION_TOPIC_BASE", "prov/#"},
        InvalidCase{"MQTT_KEYS_TOPIC_BASE", "keys/"}, InvalidCase{"MQTT_KEYS_TOPIC_BASE", ""},
        InvalidCase{"MQTT_HOST", ""}, InvalidCase{"MQTT_HOST", "bad host"}),
    invalid_case_name);

TEST(ConfigInvalid, ExactLineForANonNumericPort) {
  ConfigInputs inputs;
  inputs.environment["MQTT_PORT"] = "abc";
  EXPECT_EQ(error_of(inputs), "invalid MQTT_PORT=\"abc\": expected an integer 1..65535");
}

TEST(ConfigInvalid, ValueFromTheEnvFileIsNamedToo) {
  test::TempDir dir;
  ConfigInputs inputs;
  inputs.env_file = write_in(dir, "agent.env", "MQTT_USE_TLS=maybe\n");
  EXPECT_EQ(error_of(inputs).rfind("invalid MQTT_USE_TLS=\"maybe\": ", 0), 0u);
}

TEST(ConfigInvalid, LongClientIdIsRejected) {
  const std::string id(129, 'a');
  EXPECT_NE(error_of(with_flag("MQTT_CLIENT_ID", id)).find("MQTT_CLIENT_ID"), std::string::npos);
  EXPECT_EQ(load_config(with_flag("MQTT_CLIENT_ID", std::string(128, 'a'))).mqtt_client_id.size(),
            128u);
}

TEST(ConfigTypes, BooleanSpellings) {
  for (const char* yes : {"true", "TRUE", "1", "yes", "Yes", "on", "ON"}) {
    EXPECT_TRUE(load_config(with_flag("MQTT_USE_TLS", yes)).mqtt_use_tls) << yes;
  }
  for (const char* no : {"false", "False", "0", "no", "NO", "off", "Off"}) {
    EXPECT_FALSE(load_config(with_flag("PROVISION_RETAIN_KEYS", no)).retain_keys) << no;
  }
}

TEST(ConfigTypes, TlsChangesTheDefaultPort) {
  const Config config = load_config(with_flag("MQTT_USE_TLS", "on"));
  EXPECT_EQ(config.mqtt_port, 8883);
  EXPECT_EQ(config.entries.at("MQTT_PORT").value, "8883");
  EXPECT_EQ(config.entries.at("MQTT_PORT").source, ConfigSource::default_value);
}

TEST(ConfigTypes, EnumSpellings) {
  EXPECT_EQ(load_config(with_flag("MQTT_PROTOCOL", "5")).mqtt_protocol, pa::MqttProtocol::v5);
  EXPECT_EQ(load_config(with_flag("MQTT_PROTOCOL", "mqttv5")).mqtt_protocol, pa::MqttProtocol::v5);
  EXPECT_EQ(load_config(with_flag("MQTT_PROTOCOL", "v5")).mqtt_protocol, pa::MqttProtocol::v5);
  EXPECT_EQ(load_config(with_flag("MQTT_PROTOCOL", "311")).mqtt_protocol, pa::MqttProtocol::v311);
  EXPECT_EQ(load_config(with_flag("MQTT_PROTOCOL", "mqttv311")).mqtt_protocol,
            pa::MqttProtocol::v311);
  EXPECT_EQ(load_config(with_flag("LOG_LEVEL", "warn")).log_level, pa::LogLevel::warning);
  EXPECT_EQ(load_config(with_flag("LOG_LEVEL", "debug")).log_level, pa::LogLevel::debug);
  EXPECT_EQ(load_config(with_flag("PROVISION_E2EE_POLICY", "all")).e2ee_policy,
            pa::E2eePolicy::all);
  EXPECT_EQ(load_config(with_flag("PROVISION_E2EE_POLICY", "off")).e2ee_policy,
            pa::E2eePolicy::off);
  EXPECT_EQ(load_config(with_flag("PROVISION_KEY_FORMAT", "pem")).key_format, pa::KeyFormat::pem);
  EXPECT_EQ(load_config(with_flag("PROVISION_KEY_TYPE", "ed25519")).key_type,
            pa::keystore::KeyType::ed25519);
  EXPECT_EQ(load_config(with_flag("PROVISION_KEY_TYPE", "ec-p256")).key_type,
            pa::keystore::KeyType::ec_p256);
  EXPECT_EQ(load_config(with_flag("PROVISION_WORKERS", "256")).workers, 256);
  EXPECT_EQ(load_config(with_flag("PROVISION_MAX_PAYLOAD", "16777216")).max_payload, 16777216);
}

TEST(ConfigTls, ClientCertificateAndKeyGoTogether) {
  test::TempDir dir;
  const std::string cert = write_in(dir, "client.crt", "cert");
  const std::string key = write_in(dir, "client.key", "key");

  std::string error = error_of(with_flag("MQTT_CERTFILE", cert));
  EXPECT_EQ(error.rfind("invalid MQTT_CERTFILE=\"" + cert + "\": ", 0), 0u) << error;
  EXPECT_NE(error.find("MQTT_KEYFILE"), std::string::npos) << error;
  error = error_of(with_flag("MQTT_KEYFILE", key));
  EXPECT_EQ(error.rfind("invalid MQTT_KEYFILE=\"" + key + "\": ", 0), 0u) << error;

  ConfigInputs inputs;
  inputs.flags["MQTT_CERTFILE"] = cert;
  inputs.flags["MQTT_KEYFILE"] = key;
  inputs.flags["MQTT_CA_CERTS"] = write_in(dir, "ca.pem", "ca");
  const Config config = load_config(inputs);
  EXPECT_EQ(config.mqtt_certfile, cert);
  EXPECT_EQ(config.mqtt_keyfile, key);
  EXPECT_EQ(config.mqtt_ca_certs, dir.file("ca.pem"));

  // A folder is not a readable CA file.
  error = error_of(with_flag("MQTT_CA_CERTS", dir.file("")));
  EXPECT_NE(error.find("MQTT_CA_CERTS"), std::string::npos) << error;
  EXPECT_NE(error.find("cannot read"), std::string::npos) << error;
}

TEST(ConfigPassword, FileWinsOverVariableAndLosesItsTrailingNewline) {
  test::TempDir dir;
  ConfigInputs inputs;
  inputs.flags["MQTT_USER"] = "agent";
  inputs.flags["MQTT_PASSWORD"] = "from-variable";
  inputs.environment["MQTT_PASSWORD_FILE"] = write_in(dir, "password", "from-file\r\n");
  Config config = load_config(inputs);
  EXPECT_EQ(config.mqtt_password, "from-file");

  inputs.environment.clear();
  config = load_config(inputs);
  EXPECT_EQ(config.mqtt_password, "from-variable");
}

TEST(ConfigPassword, PasswordNeedsAUser) {
  const std::string error = error_of(with_flag("MQTT_PASSWORD", "s3cret"));
  EXPECT_EQ(error.rfind("invalid MQTT_USER=\"\": ", 0), 0u) << error;
  EXPECT_EQ(error.find("s3cret"), std::string::npos) << error;
}

TEST(ConfigDescribe, MasksThePasswordAndShowsSources) {
  test::TempDir dir;
  ScopedEnv state("STATE_DIRECTORY", nullptr);
  ConfigInputs inputs;
  inputs.flags["MQTT_HOST"] = "broker.local";
  inputs.environment["MQTT_USER"] = "agent";
  inputs.environment["MQTT_PASSWORD"] = "hunter2";
  inputs.env_file = write_in(dir, "agent.env", "LOG_LEVEL=debug\n");
  inputs.environment["MQTT_PASSWORD_FILE"] = write_in(dir, "password", "file-secret\n");
  const Config config = load_config(inputs);
  const auto lines = pa::describe_config(config);
  ASSERT_EQ(lines.size(), pa::config_variables().size());

  auto has = [&](const std::string& line) {
    return std::find(lines.begin(), lines.end(), line) != lines.end();
  };
  EXPECT_EQ(lines[0], "MQTT_BROKER_URL= (unset)");
  EXPECT_EQ(lines[1], "MQTT_HOST=broker.local (flag)");
  EXPECT_EQ(lines[2], "MQTT_PORT=1883 (default)");
  EXPECT_TRUE(has("MQTT_USER=agent (environment)"));
  EXPECT_TRUE(has("MQTT_PASSWORD=******** (environment)"));
  EXPECT_TRUE(has("MQTT_PASSWORD_FILE=" + dir.file("password") + " (environment)"));
  EXPECT_TRUE(has("LOG_LEVEL=debug (env-file)"));
  EXPECT_TRUE(has("MQTT_CERTFILE= (unset)"));
  EXPECT_TRUE(
      has("PROVISION_KEYS_DIR=" + (fs::current_path() / "sensor_keys").string() + " (default)"));
  for (const auto& line : lines) {
    EXPECT_EQ(line.find("hunter2"), std::string::npos) << line;
    EXPECT_EQ(line.find("file-secret"), std::string::npos) << line;
  }
}

TEST(ConfigClientId, FromMachineIdFile) {
  test::TempDir dir;
  const std::string path = write_in(dir, "machine-id", "0123456789ABCDEF0123456789abcdef\n");
  EXPECT_EQ(pa::default_client_id(path), "provision-agent-0123456789ab");
}

TEST(ConfigClientId, HostNameWhenMachineIdIsMissingEmptyOrNotHex) {
  test::TempDir dir;
  char host[256] = {};
  ASSERT_EQ(gethostname(host, sizeof host - 1), 0);
  const std::string expected = std::string("provision-agent-") + host;
  EXPECT_EQ(pa::default_client_id(dir.file("missing")), expected);
  EXPECT_EQ(pa::default_client_id(write_in(dir, "empty", "")), expected);
  EXPECT_EQ(pa::default_client_id(write_in(dir, "uninitialized", "uninitialized\n")), expected);
}

TEST(ConfigDevices, ServesDeviceMatchesGlobs) {
  const Config config = load_config(with_flag("PROVISION_DEVICES", " pH* , ec?1,, "));
  EXPECT_EQ(config.devices, (std::vector<std::string>{"pH*", "ec?1"}));
  EXPECT_TRUE(config.serves_device("pH01"));
  EXPECT_TRUE(config.serves_device("pH"));
  EXPECT_TRUE(config.serves_device("pH/a"));  // no FNM_PATHNAME
  EXPECT_TRUE(config.serves_device("ec01"));
  EXPECT_TRUE(config.serves_device("ecX1"));
  EXPECT_FALSE(config.serves_device("ec001"));
  EXPECT_FALSE(config.serves_device("temp01"));
  EXPECT_FALSE(config.serves_device("ph01"));

  EXPECT_TRUE(load_config({}).serves_device("anything"));
}

TEST(ConfigKeysDir, ResolutionOrder) {
  test::TempDir dir;
  ScopedEnv state("STATE_DIRECTORY", dir.file("state").c_str());
  ConfigInputs inputs;
  inputs.flags["PROVISION_KEYS_DIR"] = dir.file("keys");
  inputs.environment["PROJECT_ROOT"] = dir.file("project");

  Config config = load_config(inputs);
  EXPECT_EQ(config.keys_dir, dir.file("keys"));
  EXPECT_EQ(config.entries.at("PROVISION_KEYS_DIR").source, ConfigSource::flag);

  inputs.flags.clear();
  config = load_config(inputs);
  EXPECT_EQ(config.keys_dir, dir.file("project") + "/sensor_keys");
  EXPECT_EQ(config.project_root, dir.file("project"));
  EXPECT_EQ(config.entries.at("PROVISION_KEYS_DIR").value, config.keys_dir);
  EXPECT_EQ(config.entries.at("PROVISION_KEYS_DIR").source, ConfigSource::environment);

  inputs.environment.clear();
  config = load_config(inputs);
  EXPECT_EQ(config.keys_dir, dir.file("state") + "/sensor_keys");
  EXPECT_EQ(config.entries.at("PROVISION_KEYS_DIR").source, ConfigSource::environment);

  unsetenv("STATE_DIRECTORY");
  config = load_config(inputs);
  EXPECT_EQ(config.keys_dir, (fs::current_path() / "sensor_keys").string());
  EXPECT_TRUE(fs::path(config.keys_dir).is_absolute());
  EXPECT_EQ(config.entries.at("PROVISION_KEYS_DIR").source, ConfigSource::default_value);
}

TEST(ConfigEnvironment, ReadsOnlyConfigVariablesThatAreSet) {
  ScopedEnv host("MQTT_HOST", "env.example");
  ScopedEnv port("MQTT_PORT", nullptr);
  ScopedEnv other("PA_CONFIG_TEST_UNRELATED", "x");
  const auto values = pa::environment_variables();
  EXPECT_EQ(values.at("MQTT_HOST"), "env.example");
  EXPECT_EQ(values.count("MQTT_PORT"), 0u);
  EXPECT_EQ(values.count("PA_CONFIG_TEST_UNRELATED"), 0u);
}

TEST(ConfigSourceNames, AsShownByTheConfigCommand) {
  EXPECT_STREQ(pa::to_string(ConfigSource::default_value), "default");
  EXPECT_STREQ(pa::to_string(ConfigSource::broker_config), "broker-config");
  EXPECT_STREQ(pa::to_string(ConfigSource::env_file), "env-file");
  EXPECT_STREQ(pa::to_string(ConfigSource::environment), "environment");
  EXPECT_STREQ(pa::to_string(ConfigSource::flag), "flag");
}

// ---- Variables of SPEC revision 2: parsed, validated and documented here; used elsewhere ----

TEST(ConfigCsr, BooleanDefaultFalse) {
  EXPECT_FALSE(load_config({}).csr);
  EXPECT_EQ(load_config({}).entries.at("PROVISION_CSR").value, "false");
  EXPECT_TRUE(load_config(with_flag("PROVISION_CSR", "yes")).csr);
  EXPECT_FALSE(load_config(with_flag("PROVISION_CSR", "off")).csr);
  EXPECT_EQ(error_of(with_flag("PROVISION_CSR", "maybe")),
            "invalid PROVISION_CSR=\"maybe\": expected true/false, 1/0, yes/no or on/off");
}

TEST(ConfigCaFile, MustBeReadable) {
  test::TempDir dir;
  EXPECT_FALSE(load_config({}).ca_file);
  const std::string ca = write_in(dir, "ca.pem", "-----BEGIN CERTIFICATE-----\n");
  EXPECT_EQ(load_config(with_flag("PROVISION_CA_FILE", ca)).ca_file, ca);
  EXPECT_FALSE(load_config(with_flag("PROVISION_CA_FILE", "")).ca_file);  // empty is unset
  const std::string missing = dir.file("missing.pem");
  EXPECT_EQ(
      error_of(with_flag("PROVISION_CA_FILE", missing)),
      "invalid PROVISION_CA_FILE=\"" + missing + "\": cannot read file: No such file or directory");
}

TEST(ConfigKeyMaxAge, DurationWithUnitInSeconds) {
  EXPECT_FALSE(load_config({}).key_max_age_seconds);
  EXPECT_EQ(load_config({}).entries.at("PROVISION_KEY_MAX_AGE").value, "");
  auto seconds = [](const char* text) {
    return load_config(with_flag("PROVISION_KEY_MAX_AGE", text)).key_max_age_seconds;
  };
  EXPECT_EQ(seconds("365d"), 365 * 86400);
  EXPECT_EQ(seconds("12h"), 12 * 3600);
  EXPECT_EQ(seconds("90m"), 90 * 60);
  EXPECT_EQ(seconds("1s"), 1);
  EXPECT_EQ(seconds("36500d"), 36500LL * 86400);
  for (const char* bad :
       {"365", "d", "-1d", "0d", "1y", "1.5d", "36501d", " 1d", "99999999999999999d"}) {
    const std::string error = error_of(with_flag("PROVISION_KEY_MAX_AGE", bad));
    EXPECT_EQ(error, std::string("invalid PROVISION_KEY_MAX_AGE=\"") + bad +
                         "\": expected a duration 1s..36500d: an integer with s, m, h or d (365d)");
  }
}

TEST(ConfigKeyPool, IntegerZeroToSixtyFour) {
  EXPECT_EQ(load_config({}).key_pool, 2);
  EXPECT_EQ(load_config(with_flag("PROVISION_KEY_POOL", "0")).key_pool, 0);
  EXPECT_EQ(load_config(with_flag("PROVISION_KEY_POOL", "64")).key_pool, 64);
  for (const char* bad : {"65", "-1", "two", ""})
    EXPECT_EQ(error_of(with_flag("PROVISION_KEY_POOL", bad)),
              std::string("invalid PROVISION_KEY_POOL=\"") + bad + "\": expected an integer 0..64");
}

TEST(ConfigMetricsFile, ItsFolderMustExist) {
  test::TempDir dir;
  EXPECT_FALSE(load_config({}).metrics_file);
  const std::string file = dir.file("provision_agent.prom");
  EXPECT_EQ(load_config(with_flag("PROVISION_METRICS_FILE", file)).metrics_file, file);
  const std::string nowhere = dir.file("missing/provision_agent.prom");
  EXPECT_EQ(error_of(with_flag("PROVISION_METRICS_FILE", nowhere)),
            "invalid PROVISION_METRICS_FILE=\"" + nowhere + "\": its folder " +
                dir.file("missing") + " does not exist");
  EXPECT_EQ(
      error_of(with_flag("PROVISION_METRICS_FILE", dir.path() + "/")),
      "invalid PROVISION_METRICS_FILE=\"" + dir.path() + "/\": expected a file name, not a folder");
}

TEST(ConfigBrokerList, FailOverBrokersInOrderTheFirstIsTheSessions) {
  const Config config = load_config(
      with_flag("MQTT_BROKER_URL", "mqtt://a.example:1884, mqtts://b.example,mqtt://[::1]"));
  EXPECT_EQ(config.brokers,
            (std::vector<pa::BrokerAddress>{
                {"a.example", 1884, false}, {"b.example", 8883, true}, {"::1", 1883, false}}));
  EXPECT_EQ(config.mqtt_host, "a.example");
  EXPECT_EQ(config.mqtt_port, 1884);
  EXPECT_FALSE(config.mqtt_use_tls);

  // Without a URL the one broker is MQTT_HOST, MQTT_PORT and MQTT_USE_TLS.
  ConfigInputs inputs;
  inputs.environment["MQTT_HOST"] = "h.example";
  inputs.environment["MQTT_USE_TLS"] = "true";
  EXPECT_EQ(load_config(inputs).brokers,
            (std::vector<pa::BrokerAddress>{{"h.example", 8883, true}}));

  // A stronger MQTT_HOST replaces the first broker's host; the others stay.
  inputs = with_flag("MQTT_HOST", "flag.example");
  inputs.environment["MQTT_BROKER_URL"] = "mqtt://a.example,mqtt://b.example:2000";
  EXPECT_EQ(
      load_config(inputs).brokers,
      (std::vector<pa::BrokerAddress>{{"flag.example", 1883, false}, {"b.example", 2000, false}}));
}

TEST(ConfigBrokerList, ABadEntryIsNamedAndCredentialsAreNeverShown) {
  EXPECT_EQ(error_of(with_flag("MQTT_BROKER_URL", "mqtt://a.example,http://b.example")),
            "invalid MQTT_BROKER_URL=\"mqtt://a.example,http://b.example\": entry 2 of the list: "
            "unsupported scheme \"http\"; expected mqtt://host[:port] or mqtts://host[:port]");
  EXPECT_EQ(error_of(with_flag("MQTT_BROKER_URL", "mqtt://a.example,,mqtt://b.example")),
            "invalid MQTT_BROKER_URL=\"mqtt://a.example,,mqtt://b.example\": entry 2 of the "
            "list: empty; expected mqtt://host[:port] or mqtts://host[:port]");
  const std::string error =
      error_of(with_flag("MQTT_BROKER_URL", "mqtt://a.example,mqtts://user:s3cret@b.example"));
  EXPECT_EQ(error.find("s3cret"), std::string::npos) << error;
  EXPECT_NE(error.find("mqtts://****@b.example"), std::string::npos) << error;
  EXPECT_NE(error.find("entry 2 of the list: credentials"), std::string::npos) << error;
}

TEST(ConfigBrokerList, BrokerConfigJsonGivesAListOrAnArray) {
  test::TempDir dir;
  const std::string list =
      write_in(dir, "list.json", R"({"mqtt":{"broker":"mqtts://a.example,mqtts://b.example"}})");
  EXPECT_EQ(load_config(with_flag("MQTT_BROKER_CONFIG", list)).brokers,
            (std::vector<pa::BrokerAddress>{{"a.example", 8883, true}, {"b.example", 8883, true}}));
  const std::string array =
      write_in(dir, "array.json", R"({"broker":["mqtt://a.example:1","mqtt://b.example:2"]})");
  const Config config = load_config(with_flag("MQTT_BROKER_CONFIG", array));
  EXPECT_EQ(config.brokers,
            (std::vector<pa::BrokerAddress>{{"a.example", 1, false}, {"b.example", 2, false}}));
  EXPECT_EQ(config.entries.at("MQTT_BROKER_URL").value, "mqtt://a.example:1,mqtt://b.example:2");
  EXPECT_EQ(config.entries.at("MQTT_BROKER_URL").source, ConfigSource::broker_config);
  const std::string bad = write_in(dir, "bad.json", R"({"broker":["mqtt://a.example",1]})");
  EXPECT_EQ(error_of(with_flag("MQTT_BROKER_CONFIG", bad)),
            "invalid MQTT_BROKER_CONFIG=\"" + bad +
                "\": \"broker\" must be a string or an array of strings");
}

}  // namespace
