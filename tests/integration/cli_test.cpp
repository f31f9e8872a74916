// The command line an operator uses (SPEC sections 2, 6, 7 and 8): exit codes, `config` and
// `plugins`.
#include <gtest/gtest.h>

#include <sstream>

#include "agent_harness.hpp"

namespace pa::test {
namespace {

// Runs the agent with only these variables (and PATH) in its environment.
CommandResult run_agent(const std::string& arguments, const std::map<std::string, std::string>& env,
                        const std::string& redirect = "2>&1") {
  std::string command = "env -i PATH=/usr/bin:/bin";
  for (const auto& [name, value] : env) command += " " + shell_quote(name + "=" + value);
  return run_command(command + " " + agent_shell_command() + " " + arguments + " " + redirect);
}

std::vector<std::string> non_empty_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) lines.push_back(line);
  }
  return lines;
}

class AgentCliTest : public ::testing::Test {
 protected:
  std::map<std::string, std::string> valid_env() const {
    return {{"MQTT_HOST", "127.0.0.1"},
            {"MQTT_PORT", "1"},  // never connected to by these commands
            {"MQTT_CLIENT_ID", "pa-it-cli"},
            {"PROVISION_KEYS_DIR", dir.file("sensor_keys")},
            {"PROVISION_PLUGIN_DIR", PA_PLUGIN_BUILD_DIR},
            {"STATE_DIRECTORY", dir.path()}};
  }
  TempDir dir;
};

TEST_F(AgentCliTest, InvalidPortExitsWithConfigErrorNamingIt) {
  auto env = valid_env();
  env["MQTT_PORT"] = "abc";
  // Only stderr is captured: the operator's one line must be there.
  auto result = run_agent("run", env, "2>&1 >/dev/null");
  EXPECT_EQ(result.exit_code, 78) << result.output;
  auto lines = non_empty_lines(result.output);
  ASSERT_EQ(lines.size(), 1u) << "expected one line on stderr, got:\n" << result.output;
  EXPECT_NE(lines[0].find("MQTT_PORT"), std::string::npos) << lines[0];
  EXPECT_NE(lines[0].find("abc"), std::string::npos) << lines[0];
}

TEST_F(AgentCliTest, UnknownKeyTypeExitsWithConfigError) {
  auto env = valid_env();
  env["PROVISION_KEY_TYPE"] = "dsa-1024";
  auto result = run_agent("run", env);
  EXPECT_EQ(result.exit_code, 78) << result.output;
  EXPECT_NE(result.output.find("PROVISION_KEY_TYPE"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("dsa-1024"), std::string::npos) << result.output;
}

TEST_F(AgentCliTest, ConfigMasksPassword) {
  auto env = valid_env();
  env["MQTT_USER"] = "agent-user";
  env["MQTT_PASSWORD"] = "secret";
  auto result = run_agent("config", env);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(result.output.find("secret"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("MQTT_PASSWORD"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("agent-user"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("127.0.0.1"), std::string::npos) << result.output;

  // A password read from MQTT_PASSWORD_FILE is not shown either.
  const std::string password_file = dir.file("mqtt_password");
  write_file(password_file, "from-the-file-Pa55", 0600);
  env.erase("MQTT_PASSWORD");
  env["MQTT_PASSWORD_FILE"] = password_file;
  result = run_agent("config", env);
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(result.output.find("from-the-file-Pa55"), std::string::npos) << result.output;
}

TEST_F(AgentCliTest, ConfigRejectsInvalidValue) {
  auto env = valid_env();
  env["MQTT_USE_TLS"] = "maybe";
  auto result = run_agent("config", env);
  EXPECT_NE(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("MQTT_USE_TLS"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("maybe"), std::string::npos) << result.output;
}

TEST_F(AgentCliTest, PluginsListsBundledPluginsAndTheirActions) {
  auto result = run_agent("plugins", valid_env());
  EXPECT_EQ(result.exit_code, 0) << result.output;
  for (const char* expected :
       {"keygen", "revoke", "generate_and_publish_key", "update", "publish_key", "delete"}) {
    EXPECT_NE(result.output.find(expected), std::string::npos)
        << "'" << expected << "' missing from:\n"
        << result.output;
  }
  // Each action on the line of the plugin that serves it.
  bool keygen_line = false;
  bool revoke_line = false;
  for (const auto& line : non_empty_lines(result.output)) {
    if (line.find("keygen") != std::string::npos &&
        line.find("generate_and_publish_key") != std::string::npos) {
      keygen_line = true;
    }
    if (line.find("revoke") != std::string::npos && line.find("delete") != std::string::npos) {
      revoke_line = true;
    }
  }
  EXPECT_TRUE(keygen_line && revoke_line) << result.output;
}

TEST_F(AgentCliTest, VersionPrintsProjectVersion) {
  auto result = run_agent("--version", valid_env());
  EXPECT_EQ(result.exit_code, 0) << result.output;
  EXPECT_NE(result.output.find("0.1.0"), std::string::npos) << result.output;
}

}  // namespace
}  // namespace pa::test
