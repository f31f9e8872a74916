// `provision-agent plugins` (SPEC section 6): what loads, each plugin's actions and options, and
// why the others did not load.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>

#include "base/log.hpp"
#include "cli/command.hpp"
#include "dispatch/host.hpp"
#include "dispatch/plugin_loader.hpp"

namespace pa::cli {
namespace {

class PluginsCommand : public Command {
 public:
  void define(CLI::App&) override {}
  int run(const ConfigInputs& inputs) override {
    const Config config = load_config(inputs);
    log_init(LogLevel::warning);  // the listing below says it all
    HostServices services;
    services.config = &config;
    services.agent_id = config.mqtt_client_id;
    auto plugins = plugin::PluginSet::load(config, services);
    fmt::print("plugin folder: {}\n", config.plugin_dir);
    for (const auto& plugin : plugins.plugins()) {
      std::vector<std::string> actions;
      for (const auto& action : plugin->actions) actions.push_back(plugin::describe(action));
      fmt::print("loaded  {} {} ({}): {}\n", plugin->name, plugin->version, plugin->path,
                 actions.empty() ? "(no actions configured)"
                                 : fmt::format("{}", fmt::join(actions, "; ")));
      for (const auto& option : plugin->options) {
        const auto& value = plugin->option_values.at(option.name);
        fmt::print("        option {}={}\n", option.variable, value ? *value : "(unset)");
      }
    }
    for (const auto& skipped : plugins.skipped())
      fmt::print("skipped {}: {}\n", skipped.path, skipped.reason);
    std::fflush(stdout);
    if (!plugins.find(kActionGenerate)) {
      std::fprintf(stderr, "provision-agent: no plugin serves %s\n", kActionGenerate);
      return kExitConfig;
    }
    return 0;
  }
};

}  // namespace

std::unique_ptr<Command> make_plugins_command() {
  return std::make_unique<PluginsCommand>();
}

}  // namespace pa::cli
