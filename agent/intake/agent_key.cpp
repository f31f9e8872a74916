#include "intake/agent_key.hpp"

#include <fmt/format.h>
#include <sys/stat.h>

#include <filesystem>
#include <system_error>

#include "base/log.hpp"
#include "intake/envelope.hpp"
#include "keystore/errors.hpp"
#include "keystore/file_util.hpp"
#include "keystore/key_pair.hpp"
#include "keystore/permissions.hpp"

namespace pa {
namespace {

namespace fs = std::filesystem;

constexpr const char* kAgentKeyFile = "agent_private.pem";

// Reads an existing key file and derives its public half. `variable` names the source for the
// one-line error.
AgentKey read_agent_key(const std::string& path, const std::string& variable,
                        std::optional<gid_t> key_group) {
  keystore::Secret pem;
  try {
    pem = keystore::Secret::take(keystore::read_private_file(path, key_group, "agent key "));
  } catch (const keystore::StoreError& e) {
    throw ConfigError(fmt::format("invalid {}=\"{}\": {}", variable, path, e.what()));
  }
  try {
    const keystore::KeyPair pair = keystore::key_pair_from_private_pem(pem.view());
    if (pair.type != keystore::KeyType::rsa2048 && pair.type != keystore::KeyType::rsa3072 &&
        pair.type != keystore::KeyType::rsa4096)
      throw ConfigError(fmt::format(
          "invalid {}=\"{}\": the agent key must be an RSA key (envelopes use RSA-OAEP), not {}",
          variable, path, keystore::to_string(pair.type)));
    return AgentKey{path, pair.public_pem, false};
  } catch (const keystore::KeyError& e) {
    throw ConfigError(fmt::format("invalid {}=\"{}\": {}", variable, path, e.what()));
  }
}

}  // namespace

std::optional<AgentKey> find_agent_key(const Config& config, std::optional<gid_t> key_group) {
  if (config.agent_key) return read_agent_key(*config.agent_key, "PROVISION_AGENT_KEY", key_group);
  if (config.project_root) {
    const fs::path legacy = fs::path(*config.project_root) / "keys" / "private.pem";
    std::error_code ec;
    if (fs::exists(legacy, ec)) return read_agent_key(legacy.string(), "PROJECT_ROOT", key_group);
  }
  const fs::path path = fs::path(config.state_dir) / kAgentKeyFile;
  std::error_code ec;
  if (fs::exists(path, ec) || fs::is_symlink(path, ec))
    return read_agent_key(path.string(), "PROVISION_AGENT_KEY", key_group);
  return std::nullopt;
}

AgentKey load_agent_key(const Config& config, std::optional<gid_t> key_group) {
  if (std::optional<AgentKey> found = find_agent_key(config, key_group)) return std::move(*found);
  const fs::path path = fs::path(config.state_dir) / kAgentKeyFile;
  try {
    keystore::create_private_dirs(config.state_dir, 0700);
    keystore::KeyPair pair = keystore::generate_key_pair(keystore::KeyType::rsa2048);
    keystore::write_file_atomic(path, pair.private_pem, 0600);
    log_info("generated the agent key {} (RSA-2048, {})", path.string(),
             keystore::fingerprint(pair.public_pem));
    return AgentKey{path.string(), pair.public_pem, true};
  } catch (const std::system_error& e) {
    throw ConfigError(
        fmt::format("cannot create the agent key {}: {} (set PROVISION_AGENT_KEY or "
                    "STATE_DIRECTORY to a writable folder)",
                    path.string(), e.code().message()));
  } catch (const keystore::KeyError& e) {
    throw ConfigError(fmt::format("cannot generate the agent key: {}", e.what()));
  }
}

}  // namespace pa
