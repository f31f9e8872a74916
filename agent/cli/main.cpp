// provision-agent: the daemon and its operator subcommands (SPEC section 7).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <map>

#include "agent.hpp"
#include "config.hpp"
#include "host.hpp"
#include "log.hpp"
#include "plugin_loader.hpp"

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
  return name == "MQTT_USE_TLS" || name == "MQTT_TLS_INSECURE" || name == "PROVISION_RETAIN_KEYS";
}

// The command line's configuration flags, shared by every subcommand.
struct CommandLine {
  std::map<std::string, std::string> values;  // by variable name
  std::map<std::string, CLI::Option*> options;
  std::string env_file;
  CLI::Option* env_file_option = nullptr;

  void add_to(CLI::App& app) {
    for (const auto& variable : pa::config_variables()) {
      CLI::Option* option = app.add_option(variable.flag, values[variable.env], variable.help);
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
  auto plugins = pa::plugin::PluginSet::load(config.plugin_dir, pa::host_table(services));
  std::printf("plugin folder: %s\n", config.plugin_dir.c_str());
  for (const auto& plugin : plugins.plugins())
    std::printf("loaded  %s %s (%s): %s\n", plugin->name.c_str(), plugin->version.c_str(),
                plugin->path.c_str(), fmt::format("{}", fmt::join(plugin->actions, ", ")).c_str());
  for (const auto& skipped : plugins.skipped())
    std::printf("skipped %s: %s\n", skipped.path.c_str(), skipped.reason.c_str());
  if (!plugins.find(pa::kActionGenerate)) {
    std::fprintf(stderr, "provision-agent: no plugin serves %s\n", pa::kActionGenerate);
    return pa::kExitConfig;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
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

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = app.exit(error);
    return code == 0 ? 0 : pa::kExitConfig;
  }

  try {
    const pa::Config effective = pa::load_config(command_line.inputs());
    if (config->parsed()) return print_config(effective);
    if (plugins->parsed()) return print_plugins(effective);
    return run_daemon(effective);
  } catch (const pa::ConfigError& error) {
    std::fprintf(stderr, "provision-agent: %s\n", error.what());
    return pa::kExitConfig;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "provision-agent: fatal: %s\n", error.what());
    return 1;
  }
}
