// provision-agent: the daemon and its operator subcommands (SPEC section 7).
#include <fmt/format.h>

#include <sys/prctl.h>
#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <map>

#include "agent.hpp"
#include "base/log.hpp"
#include "cli/operator_commands.hpp"
#include "cli/send.hpp"
#include "config/config.hpp"
#include "dispatch/host.hpp"
#include "dispatch/plugin_loader.hpp"

namespace {

// Set from the signal handler: the one piece of global state a C callback forces.
std::atomic<bool> g_stop_requested{false};

void request_stop(int /*signal*/) {
  g_stop_requested = true;
}

void install_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = request_stop;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
}

bool is_boolean_variable(const std::string& name) {
  const pa::ConfigVariable* row = pa::find_config_variable(name);
  return row != nullptr && row->kind == pa::VariableKind::boolean;
}

// A flag's --help line from its row: what it is, what it may be, its default.
std::string flag_help(const pa::ConfigVariable& row) {
  const std::string range = row.range_text();
  return fmt::format("{}{}{}{} [default: {}]", row.help, range.empty() ? "" : " (", range,
                     range.empty() ? "" : ")", row.default_text());
}

// The command line's configuration flags, shared by every subcommand.
struct CommandLine {
  std::map<std::string, std::string> values;  // by variable name
  std::map<std::string, CLI::Option*> options;
  std::string env_file;
  CLI::Option* env_file_option = nullptr;

  void add_to(CLI::App& app) {
    for (const auto& variable : pa::config_variables()) {
      CLI::Option* option =
          app.add_option(variable.flag, values[variable.env], flag_help(variable));
      option->group(
          "Configuration (each flag also reads the variable "
          "of the same name)");
      if (is_boolean_variable(variable.env)) option->expected(0, 1);
      options[variable.env] = option;
    }
    env_file_option = app.add_option("--env-file", env_file,
                                     "read variables from a systemd EnvironmentFile-style file");
  }

  pa::ConfigInputs inputs() const {
    pa::ConfigInputs inputs;
    for (const auto& [name, option] : options) {
      if (option->count() == 0) continue;
      const std::string& value = values.at(name);
      inputs.flags[name] = value.empty() && is_boolean_variable(name) ? "true" : value;
    }
    inputs.environment = pa::environment_variables();
    if (env_file_option->count() > 0) inputs.env_file = env_file;
    return inputs;
  }
};

int run_daemon(const pa::Config& config) {
  pa::log_init(config.log_level);
  install_signal_handlers();
  pa::Agent agent(config);
  return agent.run(g_stop_requested);
}

int print_config(const pa::Config& config) {
  for (const auto& line : pa::describe_config(config)) std::printf("%s\n", line.c_str());
  return 0;
}

int print_plugins(const pa::Config& config) {
  pa::log_init(pa::LogLevel::warning);  // the listing below says it all
  pa::HostServices services;
  services.config = &config;
  services.agent_id = config.mqtt_client_id;
  auto plugins = pa::plugin::PluginSet::load(config, services);
  std::printf("plugin folder: %s\n", config.plugin_dir.c_str());
  for (const auto& plugin : plugins.plugins()) {
    std::vector<std::string> actions;
    for (const auto& action : plugin->actions) actions.push_back(pa::plugin::describe(action));
    std::printf("loaded  %s %s (%s): %s\n", plugin->name.c_str(), plugin->version.c_str(),
                plugin->path.c_str(),
                actions.empty() ? "(no actions configured)"
                                : fmt::format("{}", fmt::join(actions, "; ")).c_str());
    for (const auto& option : plugin->options) {
      const auto& value = plugin->option_values.at(option.name);
      std::printf("        option %s=%s\n", option.variable.c_str(),
                  value ? value->c_str() : "(unset)");
    }
  }
  for (const auto& skipped : plugins.skipped())
    std::printf("skipped %s: %s\n", skipped.path.c_str(), skipped.reason.c_str());
  if (!plugins.find(pa::kActionGenerate)) {
    std::fprintf(stderr, "provision-agent: no plugin serves %s\n", pa::kActionGenerate);
    return pa::kExitConfig;
  }
  return 0;
}

// SPEC section 2: a password given as a flag is visible to every local user in
// /proc/<pid>/cmdline. Overwriting it in argv shortens that window to the start-up; the warning
// points to the fix.
void hide_password_flag(int argc, char** argv) {
  constexpr std::string_view kFlag = "--mqtt-password";
  bool seen = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view word = argv[i];
    char* value = nullptr;
    if (word == kFlag && i + 1 < argc)
      value = argv[i + 1];
    else if (word.size() > kFlag.size() && word.substr(0, kFlag.size() + 1) == "--mqtt-password=")
      value = argv[i] + kFlag.size() + 1;
    if (value == nullptr) continue;
    seen = true;
    for (char* c = value; *c != '\0'; ++c) *c = 'x';
  }
  if (seen)
    std::fprintf(stderr,
                 "provision-agent: warning: --mqtt-password is visible to every local user in "
                 "/proc/<pid>/cmdline; put the password in a file readable only by the agent and "
                 "set MQTT_PASSWORD_FILE instead\n");
}

}  // namespace

int main(int argc, char** argv) {
  // SPEC section 8: no core file may ever hold the broker password or a private key.
  ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  CLI::App app{"provision-agent: generates sensor key pairs on request over MQTT"};
  app.set_version_flag("--version", std::string("provision-agent ") + pa::kVersion);
  app.require_subcommand(0, 1);
  CommandLine command_line;
  command_line.add_to(app);

  CLI::App* run = app.add_subcommand("run", "run the daemon (the default)");
  CLI::App* config = app.add_subcommand(
      "config", "print the effective configuration with its sources, secrets masked, and check it");
  CLI::App* plugins = app.add_subcommand("plugins",
                                         "list the plugins that load, their actions, "
                                         "and why others did not");
  for (CLI::App* sub : {run, config, plugins}) sub->fallthrough();

  // Operator commands (SPEC section 7): `check` and `keys list/show/verify`.
  CLI::App* check = app.add_subcommand(
      "check",
      "check the configuration, broker, key store, plugins and clock: one OK/FAIL line each with "
      "a fix; exit 1 on any FAIL");
  CLI::App* keys = app.add_subcommand("keys", "inspect the local key store (no broker needed)");
  keys->require_subcommand(1);
  CLI::App* keys_list =
      keys->add_subcommand("list", "every device: user, key type, fingerprint, modes, status");
  CLI::App* keys_show = keys->add_subcommand(
      "show", "one device's key type, fingerprint, public key, paths, modes and backup");
  std::string show_device;
  std::string show_user;
  keys_show->add_option("DEVICE", show_device, "device id")->required();
  CLI::Option* show_user_option =
      keys_show->add_option("--user", show_user, "the device's user (default: every user's)");
  CLI::App* keys_verify = keys->add_subcommand(
      "verify", "check every key pair, mode and owner; exit 1 on any problem (repairs nothing)");
  for (CLI::App* sub : {check, keys, keys_list, keys_show, keys_verify}) sub->fallthrough();

  // `send ACTION DEVICE...` (SPEC section 7): what a server does, with the daemon's broker options.
  CLI::App* send = app.add_subcommand(
      "send",
      "publish a request per device, wait for each response and key, print them; exit 1 "
      "if any failed");
  pa::SendOptions send_options;
  std::string send_user, send_pubkey, send_sign, send_agent;
  int send_wait = 30;
  send->add_option("ACTION", send_options.action,
                   "generate_and_publish_key (request, generate), update (rotate), publish_key, "
                   "delete")
      ->required();
  send->add_option("DEVICE", send_options.devices, "device ids (several make a batch)")->required();
  CLI::Option* send_user_option = send->add_option("--user", send_user, "user_id of the request");
  CLI::Option* send_encrypt =
      send->add_option("--encrypt", send_pubkey,
                       "encrypt to this RSA public key PEM (a device's sensor_public.pem)");
  CLI::Option* send_to_agent =
      send->add_flag("--encrypt-to-agent", send_options.encrypt_to_agent,
                     "encrypt to the agent key from the retained status of the agent named by "
                     "--agent, or of the only agent online");
  send_encrypt->excludes(send_to_agent);
  CLI::Option* send_agent_option =
      send->add_option("--agent", send_agent,
                       "with --encrypt-to-agent: the agent's MQTT client id (its status topic "
                       "P/agents/ID/status); needed when several agents are online");
  send_agent_option->needs(send_to_agent);
  CLI::Option* send_sign_option = send->add_option(
      "--sign", send_sign, "sign the ciphertext with this RSA private key PEM (the server's)");
  send->add_option("--mode", send_options.mode, "AES mode of the envelope: EAX (default) or GCM");
  send->add_option("--wait", send_wait, "seconds to wait for all responses (0: do not wait)")
      ->check(CLI::Range(0, 3600));
  send->fallthrough();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? 0 : pa::kExitConfig;
  }
  hide_password_flag(argc, argv);

  try {
    // `check` reports an invalid configuration as one of its FAIL lines.
    if (check->parsed()) return pa::run_check(command_line.inputs(), stdout);
    const pa::Config effective = pa::load_config(command_line.inputs());
    if (config->parsed()) return print_config(effective);
    if (plugins->parsed()) return print_plugins(effective);
    if (keys_list->parsed()) return pa::run_keys_list(effective, stdout);
    if (keys_show->parsed()) {
      std::optional<std::string> user;
      if (show_user_option->count() > 0) user = show_user;
      return pa::run_keys_show(effective, show_device, user, stdout);
    }
    if (keys_verify->parsed()) return pa::run_keys_verify(effective, stdout);
    if (send->parsed()) {
      if (send_user_option->count() > 0) send_options.user = send_user;
      if (send_encrypt->count() > 0) send_options.encrypt_pubkey = send_pubkey;
      if (send_sign_option->count() > 0) send_options.sign_key = send_sign;
      if (send_agent_option->count() > 0) send_options.agent = send_agent;
      send_options.wait = std::chrono::seconds(send_wait);
      pa::log_init(pa::LogLevel::warning);
      return pa::run_send(effective, send_options, stdout, stderr);
    }
    return run_daemon(effective);
  } catch (const pa::ConfigError& error) {
    std::fprintf(stderr, "provision-agent: %s\n", error.what());
    return pa::kExitConfig;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "provision-agent: fatal: %s\n", error.what());
    return 1;
  }
}
