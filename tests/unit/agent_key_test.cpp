// The agent's own key (SPEC section 4) and the state folder it lives in: generated once, private,
// found in the documented order, and refused with one clear line when unusable.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <optional>
#include <string>

#include "config/config.hpp"
#include "intake/agent_key.hpp"
#include "intake/envelope.hpp"
#include "keystore/key_pair.hpp"
#include "test_support.hpp"

namespace pa {
namespace {

Config config_in(const test::TempDir& dir) {
  Config config;
  config.keys_dir = dir.file("sensor_keys");
  config.state_dir = dir.file("state");
  return config;
}

TEST(AgentKey, GeneratedOnceInTheStateFolder) {
  test::TempDir dir;
  const Config config = config_in(dir);
  const AgentKey first = load_agent_key(config);
  EXPECT_TRUE(first.generated);
  EXPECT_EQ(first.path, dir.file("state/agent_private.pem"));
  EXPECT_EQ(test::file_mode(first.path), 0600);
  EXPECT_EQ(test::file_mode(dir.file("state")), 0700);
  EXPECT_EQ(keystore::public_key_type(first.public_pem), keystore::KeyType::rsa2048);
  // It opens what is sealed to the published half.
  const Envelope envelope = e2ee::seal_envelope("{}", first.public_pem);
  EXPECT_TRUE(e2ee::open_envelope(envelope, test::read_file(first.path)));

  const AgentKey again = load_agent_key(config);
  EXPECT_FALSE(again.generated);
  EXPECT_EQ(again.public_pem, first.public_pem);
}

TEST(AgentKey, NamedKeyThenTheOriginalAgentsKeyThenTheStateFolder) {
  test::TempDir dir;
  Config config = config_in(dir);
  const auto original = keystore::generate_key_pair(keystore::KeyType::rsa2048);
  ::mkdir(dir.file("project").c_str(), 0700);
  ::mkdir(dir.file("project/keys").c_str(), 0700);
  test::write_file(dir.file("project/keys/private.pem"), original.private_pem, 0600);
  config.project_root = dir.file("project");
  AgentKey key = load_agent_key(config);
  EXPECT_EQ(key.path, dir.file("project/keys/private.pem"));
  EXPECT_EQ(key.public_pem, original.public_pem);
  EXPECT_FALSE(test::file_exists(dir.file("state/agent_private.pem")));

  const auto named = keystore::generate_key_pair(keystore::KeyType::rsa2048);
  test::write_file(dir.file("named.pem"), named.private_pem, 0600);
  config.agent_key = dir.file("named.pem");
  key = load_agent_key(config);
  EXPECT_EQ(key.path, dir.file("named.pem"));
  EXPECT_EQ(key.public_pem, named.public_pem);
}

TEST(AgentKey, UnusableKeyIsAConfigurationError) {
  test::TempDir dir;
  Config config = config_in(dir);
  config.agent_key = dir.file("missing.pem");
  EXPECT_THROW(load_agent_key(config), ConfigError);
  const auto ec = keystore::generate_key_pair(keystore::KeyType::ec_p256);
  test::write_file(dir.file("ec.pem"), ec.private_pem, 0600);
  config.agent_key = dir.file("ec.pem");
  try {
    load_agent_key(config);
    ADD_FAILURE() << "an EC agent key was accepted";
  } catch (const ConfigError& error) {
    EXPECT_NE(std::string(error.what()).find("PROVISION_AGENT_KEY"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("RSA"), std::string::npos) << error.what();
  }
  test::write_file(dir.file("junk.pem"), "not a key", 0600);
  config.agent_key = dir.file("junk.pem");
  EXPECT_THROW(load_agent_key(config), ConfigError);
}

// Restores an environment variable when the test ends.
class SavedEnv {
 public:
  explicit SavedEnv(const char* name) : name_(name) {
    if (const char* value = std::getenv(name)) value_ = value;
  }
  ~SavedEnv() {
    if (value_)
      setenv(name_, value_->c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  std::optional<std::string> value_;
};

// SPEC section 5: $STATE_DIRECTORY under systemd, else the XDG state folder; never the project
// folder or the key store's parent (an earlier version put it beside the key store).
TEST(StateFolder, SystemdStateDirectoryElseTheXdgStateFolder) {
  test::TempDir dir;
  SavedEnv saved_state("STATE_DIRECTORY"), saved_xdg("XDG_STATE_HOME"), saved_home("HOME");
  ConfigInputs inputs;
  inputs.flags["PROJECT_ROOT"] = dir.file("project");
  setenv("HOME", dir.file("home").c_str(), 1);
  unsetenv("STATE_DIRECTORY");
  unsetenv("XDG_STATE_HOME");
  EXPECT_EQ(load_config(inputs).state_dir, dir.file("home/.local/state/provision-agent"));
  setenv("XDG_STATE_HOME", dir.file("xdg").c_str(), 1);
  EXPECT_EQ(load_config(inputs).state_dir, dir.file("xdg/provision-agent"));
  setenv("XDG_STATE_HOME", "relative/ignored", 1);
  EXPECT_EQ(load_config(inputs).state_dir, dir.file("home/.local/state/provision-agent"));
  setenv("STATE_DIRECTORY", (dir.file("a") + ":" + dir.file("b")).c_str(), 1);
  EXPECT_EQ(load_config(inputs).state_dir, dir.file("a"));
  // Without HOME: the account's home directory, as a login would set HOME.
  unsetenv("STATE_DIRECTORY");
  unsetenv("XDG_STATE_HOME");
  unsetenv("HOME");
  const std::string state = load_config(inputs).state_dir;
  EXPECT_EQ(state.substr(0, 1), "/");
  EXPECT_NE(state.find("/.local/state/provision-agent"), std::string::npos) << state;
}

}  // namespace
}  // namespace pa
