// The table of subcommands (SPEC section 7) and the command line made from it.
#include <fmt/format.h>

#include "cli/command.hpp"

namespace pa::cli {
namespace {

bool is_boolean_variable(const std::string& name) {
  const ConfigVariable* row = find_config_variable(name);
  return row != nullptr && row->kind == VariableKind::boolean;
}

constexpr const char* kConfigGroup =
    "Configuration (each flag also reads the variable of the same name)";

}  // namespace

const char* config_value_name(const ConfigVariable& row) {
  switch (row.kind) {
    case VariableKind::text:
      return "TEXT";
    case VariableKind::path:
      return "PATH";
    case VariableKind::integer:
      return "INT";
    case VariableKind::boolean:
      return "BOOL";
    case VariableKind::choice:
      return "WORD";
    case VariableKind::duration:
      return "DURATION";
    case VariableKind::url_list:
      return "URL[,URL...]";
    case VariableKind::list:
      return "LIST";
  }
  return "TEXT";
}

const std::vector<CommandSpec>& commands() {
  static const std::vector<CommandSpec> table = {
      {"run", "run the daemon (the default)",
       "Connects to the MQTT broker, subscribes to provisioning requests for the devices this "
       "Pi serves, decodes and decrypts them, and has the handler plugins serve each one: key "
       "pairs are generated into the key store and their public keys published. A broker that "
       "cannot be reached is never fatal: the agent logs the reason once per change and keeps "
       "trying with exponential back-off.\n\n"
       "Under systemd (provision-agent.service) it reports READY=1 once subscribed, STATUS= "
       "lines and watchdog pings, and logs to the journal with the fields DEVICE_ID, USER_ID, "
       "ACTION, REQUEST_ID, OUTCOME and ERROR_CODE:\n\n"
       "  journalctl -u provision-agent DEVICE_ID=pH01\n\n"
       "SIGTERM or SIGINT stops taking requests, finishes or abandons in-flight work within 10 "
       "s, publishes the offline status and disconnects.",
       "0 after a clean stop, 78 for a configuration error (systemd does not restart it), 1 for "
       "any other fatal error.",
       true, false, make_run_command},
      {"config", "print the effective configuration with its sources, secrets masked, and check it",
       "Prints one line per configuration variable: NAME=value and where the value came from "
       "(flag, environment, env-file, broker-config or default); secrets are masked. The "
       "configuration is validated as the daemon would at start-up.\n\n"
       "  provision-agent config --env-file /etc/provision-agent/agent.env",
       "0 when the configuration is valid, 78 naming the first invalid variable and its value "
       "otherwise.",
       true, false, make_config_command},
      {"plugins", "list the plugins that load, their actions, and why others did not",
       "Loads every plugin of the plugin folder as the daemon would and lists each with its "
       "version, its actions (with their aliases and properties) and its options; a plugin that "
       "does not load is listed with the reason.",
       "0 when a plugin serves generate_and_publish_key, 78 otherwise.", false, false,
       make_plugins_command},
      {"check",
       "check the configuration, broker, key store, plugins and clock: one OK/FAIL line each with "
       "a fix; exit 1 on any FAIL",
       "Everything worth knowing before starting the service, one OK or FAIL line each, every "
       "FAIL with the command that fixes it: the configuration is valid; the broker is "
       "reachable with these credentials and TLS settings (a probe on a client id of its own, "
       "so a running agent's session is left alone); the key store's modes and owners; every "
       "key pair is consistent; the plugins load; the system clock is plausible (a Pi has no "
       "real-time clock, and the replay window depends on it).\n\n"
       "  sudo provision-agent check --env-file /etc/provision-agent/agent.env --keys-dir "
       "/var/lib/provision-agent/sensor_keys",
       "0 when every check passed, 1 when any failed.", false, false, make_check_command},
      {"keys", "inspect the local key store (no broker needed)",
       "Reads the key store directly, without a broker, and changes nothing. Run by hand on an "
       "installed Pi, point it at the service's store:\n\n"
       "  sudo provision-agent keys list --env-file /etc/provision-agent/agent.env --keys-dir "
       "/var/lib/provision-agent/sensor_keys",
       "0 on success; 1 when the store cannot be read, the device has no keys (show) or any "
       "problem was found (verify).",
       false, false, make_keys_command},
      {"send",
       "publish a request per device, wait for each response and key, print them; exit 1 if any "
       "failed",
       "What a server does, from the command line, with the daemon's broker settings: one "
       "request per device (several devices make a batch), optionally in the end-to-end "
       "encrypted envelope and signed, then each response and published key printed as\n\n"
       "  <device> response <json>\n"
       "  <device> key <payload>\n\n"
       "The client id is the agent's with -send-<pid> appended, so a running agent's session is "
       "left alone. --encrypt-to-agent takes the agent key from the retained status of the "
       "agent named by --agent, or of the only agent online.",
       "0 when every request succeeded, 1 when any failed or timed out, 78 for unusable options "
       "(an unreadable key, an invalid device id).",
       false, false, make_send_command},
      {"audit", "verify the audit log of key operations (no broker needed)",
       "Every change to the key store (generate, update, delete, install_certificate, repairs) "
       "is appended to the audit log in the state folder, each entry chained to the one before "
       "by its SHA-256 hash (SPEC section 5). `audit verify` reads the log and its rotated "
       "generations and names the first entry that was changed, removed, reordered or "
       "truncated away. With --checkpoint, a retained P/agents/<client id>/audit message saved "
       "to a file, it also checks the checkpoint's signature by the agent key and that the log "
       "still holds the entry it names, which catches a log cut short.\n\n"
       "  sudo -u provision-agent provision-agent audit verify --env-file "
       "/etc/provision-agent/agent.env",
       "0 when the log (and checkpoint) are intact, 1 otherwise.", false, false,
       make_audit_command},
      {"docs", "print generated documentation (agent.env, README tables, manual pages, completion)",
       "", "", false, true, make_docs_command},
  };
  return table;
}

std::string flag_help(const ConfigVariable& row) {
  const std::string range = row.range_text();
  return fmt::format("{}{}{}{} [default: {}]", row.help, range.empty() ? "" : " (", range,
                     range.empty() ? "" : ")", row.default_text());
}

void ConfigFlags::define(CLI::App& app) {
  for (const ConfigVariable& row : config_variables()) {
    CLI::Option* option = app.add_option(row.flag, values_[row.env], flag_help(row));
    option->group(kConfigGroup)->type_name(config_value_name(row));
    if (row.kind == VariableKind::boolean) option->expected(0, 1);
    options_[row.env] = option;
  }
  env_file_option_ = app.add_option("--env-file", env_file_,
                                    "read variables from a systemd EnvironmentFile-style file")
                         ->type_name("PATH");
}

ConfigInputs ConfigFlags::inputs() const {
  ConfigInputs inputs;
  for (const auto& [name, option] : options_) {
    if (option->count() == 0) continue;
    const std::string& value = values_.at(name);
    // A boolean flag without a value (--mqtt-use-tls) means true.
    inputs.flags[name] = value.empty() && is_boolean_variable(name) ? "true" : value;
  }
  inputs.environment = environment_variables();
  if (env_file_option_->count() > 0) inputs.env_file = env_file_;
  return inputs;
}

CommandLine::CommandLine() {
  app.set_version_flag("--version", std::string("provision-agent ") + PA_VERSION);
  app.require_subcommand(0, 1);
  flags.define(app);
  for (const CommandSpec& spec : commands()) {
    CLI::App* sub = app.add_subcommand(spec.name, spec.summary);
    // The configuration flags may follow the subcommand too.
    sub->fallthrough();
    if (spec.hidden) sub->group("");
    std::unique_ptr<Command> command = spec.make();
    command->define(*sub);
    subcommands.push_back({&spec, sub, std::move(command)});
  }
}

int CommandLine::run() {
  for (Entry& entry : subcommands)
    if (entry.app->parsed()) return entry.command->run(flags.inputs());
  return subcommands.front().command->run(flags.inputs());
}

}  // namespace pa::cli
