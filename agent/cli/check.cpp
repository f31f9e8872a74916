// `provision-agent check` (SPEC section 7): everything an operator wants to know before starting
// the service, one OK or FAIL line each, every FAIL with its fix. Everything here reads; nothing
// creates, repairs or removes a file.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <memory>
#include <optional>

#include "base/log.hpp"
#include "base/time.hpp"
#include "cli/command.hpp"
#include "cli/findings.hpp"
#include "dispatch/host.hpp"
#include "dispatch/plugin_loader.hpp"
#include "intake/agent_key.hpp"
#include "keystore/file_util.hpp"
#include "keystore/inspect.hpp"
#include "keystore/key_pair.hpp"
#include "keystore/permissions.hpp"
#include "keystore/rotation.hpp"
#include "mqtt/probe.hpp"

namespace pa::cli {
namespace {

// How long the broker probe may take, TCP, TLS and MQTT together.
constexpr auto kBrokerTimeout = std::chrono::seconds(5);

// ---------------------------------------------------------------------------------------------
// check

std::string config_fix(const ConfigInputs& inputs) {
  if (inputs.env_file)
    return fmt::format(
        "correct the value in {} (provision-agent config shows each value and "
        "its source)",
        *inputs.env_file);
  return "correct the variable or flag named (provision-agent config shows each value and its "
         "source)";
}

// Each broker of the list (SPEC 3.6), probed by the session's own library (mqtt/probe.hpp).
void check_broker(const Config& config, std::chrono::milliseconds timeout, Findings& findings) {
  for (const BrokerAddress& broker : config.brokers)
    for (const mqtt::Finding& finding : mqtt::check_broker(config, broker, timeout)) {
      if (finding.ok)
        findings.ok(fmt::format("{} {}", finding.what, finding.text));
      else
        findings.fail(finding.what, finding.text, finding.fix);
    }
}

void check_key_store(const Config& config, Findings& findings) {
  const std::filesystem::path root = config.keys_dir;
  if (const auto problem = keystore::inspect_root(root, config.key_group)) {
    const Wording wording = word(*problem);
    findings.fail("key store root " + root.string(), wording.why, wording.fix);
    return;
  }
  findings.ok(root_summary(root));
  std::vector<keystore::DeviceReport> devices;
  try {
    devices = keystore::inspect_store(root);
  } catch (const keystore::StoreError& error) {
    findings.fail("key store " + root.string(), error.what(),
                  fmt::format("run the check as the key store's owner (ls -ld {})", root.string()));
    return;
  }
  const auto access = distinct_problems(devices, true);
  for (const WordedProblem& problem : access)
    findings.fail(problem.path, problem.wording.why, problem.wording.fix);
  if (access.empty())
    findings.ok(fmt::format("key store modes and owners ({})", count_devices(devices.size())));
  const auto keys = distinct_problems(devices, false);
  for (const WordedProblem& problem : keys)
    findings.fail(problem.path, problem.wording.why, problem.wording.fix);
  if (keys.empty())
    findings.ok(fmt::format("key pairs consistent ({})", count_devices(devices.size())));
}

// Key ages and certificates (SPEC section 5): what is due is a task for the operator, not a
// failure of the set-up, so the line is OK either way and names the command that lists them.
void check_key_ages(const Config& config, Findings& findings) {
  try {
    const auto ages = keystore::key_ages(config.keys_dir, config.key_max_age_seconds,
                                         static_cast<std::int64_t>(std::time(nullptr)));
    std::size_t certificates = 0, due = 0;
    std::optional<std::int64_t> first_expiry;
    for (const keystore::KeyAge& age : ages) {
      if (age.due) ++due;
      if (!age.certificate) continue;
      ++certificates;
      if (!first_expiry || age.certificate->not_after < *first_expiry)
        first_expiry = age.certificate->not_after;
    }
    findings.ok(
        fmt::format("key ages: {} certificate(s){}; {} device(s) due for rotation{}", certificates,
                    first_expiry ? ", the first expiring " + format_rfc3339(*first_expiry) : "",
                    due, due > 0 ? " (provision-agent keys due lists them)" : ""));
  } catch (const keystore::StoreError&) {
    // The key store lines above say why it cannot be read.
  }
}

// The agent key (SPEC 3.2 and 4): its fingerprint, which a server pins to check attestations.
void check_agent_key(const Config& config, Findings& findings) {
  try {
    std::optional<gid_t> key_group;
    if (config.key_group) key_group = keystore::resolve_group(*config.key_group);
    if (const std::optional<AgentKey> key = find_agent_key(config, key_group))
      findings.ok(fmt::format("agent key {}: {} (pin it on the server: keys show --agent)",
                              key->path, keystore::fingerprint(key->public_pem)));
    else
      findings.ok(fmt::format("no agent key yet in {}: the agent makes one when it first starts",
                              config.state_dir));
  } catch (const std::exception& error) {
    findings.fail("agent key", error.what(),
                  "give the agent key to the agent's user alone (chmod 600, chown), or set "
                  "PROVISION_AGENT_KEY to a key it can read");
  }
}

void check_plugins(const Config& config, Findings& findings) {
  HostServices services;
  services.config = &config;
  services.agent_id = config.mqtt_client_id;
  const std::string fix_skipped =
      fmt::format("remove it from {} or rebuild it against provision/plugin.h", config.plugin_dir);
  try {
    auto plugins = plugin::PluginSet::load(config, services);
    for (const auto& plugin : plugins.plugins()) {
      std::vector<std::string> actions;
      for (const auto& action : plugin->actions) actions.push_back(action.name);
      findings.ok(fmt::format("plugin {} {} ({})", plugin->name, plugin->version,
                              fmt::join(actions, ", ")));
    }
    for (const auto& skipped : plugins.skipped())
      findings.fail("plugin " + skipped.path, skipped.reason, fix_skipped);
    if (!plugins.find(kActionGenerate))
      findings.fail("plugins in " + config.plugin_dir,
                    fmt::format("no plugin serves {}", kActionGenerate),
                    fmt::format("install the keygen plugin into {} (or set PROVISION_PLUGIN_DIR)",
                                config.plugin_dir));
  } catch (const ConfigError& error) {
    findings.fail("plugins in " + config.plugin_dir, error.what(),
                  "correct PROVISION_PLUGIN_DIR or the folder's mode and owner as named");
  }
}

void check_clock(Findings& findings) {
  const auto now = std::chrono::system_clock::now();
  const std::string what = "system clock";
  if (std::optional<std::string> problem = clock_problem(now)) {
    findings.fail(what, *problem,
                  "wait for time sync (timedatectl status; systemd-timesyncd or another NTP client "
                  "must be running and reach a time server)");
    return;
  }
  findings.ok(fmt::format("{} plausible ({})", what,
                          format_rfc3339(std::chrono::system_clock::to_time_t(now))));
}

// One line per check; 1 when any failed. An invalid configuration is one of the FAIL lines.
int run_check(const ConfigInputs& inputs, std::FILE* out, std::chrono::milliseconds timeout) {
  Findings findings(out);
  std::optional<Config> config;
  try {
    config = load_config(inputs);
    findings.ok("configuration valid");
  } catch (const ConfigError& error) {
    findings.fail("configuration", error.what(), config_fix(inputs));
  }
  if (config) {
    // Plugins and the loader log what they skip; the lines below say it already.
    log_init(LogLevel::error);
    check_broker(*config, timeout, findings);
    check_key_store(*config, findings);
    check_key_ages(*config, findings);
    check_agent_key(*config, findings);
    check_plugins(*config, findings);
  }
  check_clock(findings);
  std::fflush(out);
  return findings.failures() > 0 ? 1 : 0;
}

class CheckCommand : public Command {
 public:
  void define(CLI::App&) override {}
  // An invalid configuration is one of its FAIL lines, not an exit 78.
  int run(const ConfigInputs& inputs) override { return run_check(inputs, stdout, kBrokerTimeout); }
};

}  // namespace

std::unique_ptr<Command> make_check_command() {
  return std::make_unique<CheckCommand>();
}

}  // namespace pa::cli
