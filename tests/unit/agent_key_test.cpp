// The agent's own key (SPEC section 4) and the state folder it lives in: generated once, private,
// found in the documented order, and refused with one clear line when unusable.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <optional>
#include <string>

#include "agent_key.hpp"
#include "config.hpp"
#include "envelope.hpp"
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

TEST(StateFolder, SystemdStateDirectoryElseBesideTheKeyStore) {
  test::TempDir dir;
  ConfigInputs inputs;
  inputs.flags["PROVISION_KEYS_DIR"] = dir.file("store/sensor_keys/");
  const char* saved = std::getenv("STATE_DIRECTORY");
  const std::optional<std::string> old = saved ? std::optional<std::string>(saved) : std::nullopt;
  unsetenv("STATE_DIRECTORY");
  EXPECT_EQ(load_config(inputs).state_dir, dir.file("store"));
  setenv("STATE_DIRECTORY", (dir.file("a") + ":" + dir.file("b")).c_str(), 1);
  EXPECT_EQ(load_config(inputs).state_dir, dir.file("a"));
  if (old)
    setenv("STATE_DIRECTORY", old->c_str(), 1);
  else
    unsetenv("STATE_DIRECTORY");
}

}  // namespace
}  // namespace pa
