#pragma once
// Plugin loading (SPEC section 6): dlopen with RTLD_NOW|RTLD_LOCAL, the versioned handshake,
// size checks, the plugin's declared options read from the configuration and validated, its
// actions (declared and registered in init()) with their properties, duplicate-action refusal,
// clear skip reasons, shutdown in reverse load order.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.hpp"
#include "dispatch/host.hpp"
#include "provision/plugin.h"

namespace pa::plugin {

// Move-only owner of a dlopen handle.
class SharedLibrary {
 public:
  // Throws std::runtime_error carrying dlerror().
  static SharedLibrary open(const std::string& path);
  SharedLibrary(SharedLibrary&& other) noexcept : handle_(other.handle_) {
    other.handle_ = nullptr;
  }
  SharedLibrary& operator=(SharedLibrary&& other) noexcept;
  SharedLibrary(const SharedLibrary&) = delete;
  SharedLibrary& operator=(const SharedLibrary&) = delete;
  ~SharedLibrary();

  void* symbol(const char* name) const;  // nullptr when missing

 private:
  explicit SharedLibrary(void* handle) : handle_(handle) {}
  void* handle_ = nullptr;
};

// An action as a plugin described it (pa_action, copied).
struct ActionSpec {
  std::string name;
  std::vector<std::string> aliases;
  std::uint32_t flags = 0;  // PA_ACTION_*
  std::string help;

  bool destructive(bool force) const {
    return (flags & PA_ACTION_DESTRUCTIVE) != 0 ||
           (force && (flags & PA_ACTION_DESTRUCTIVE_FORCED) != 0);
  }
  bool publishes_key() const { return (flags & PA_ACTION_PUBLISHES_KEY) != 0; }
};

// An option as a plugin declared it (pa_option, copied), with its configuration variable.
struct OptionSpec {
  std::string name;      // "TIMEOUT"
  std::string variable;  // "PROVISION_PLUGIN_EXEC_TIMEOUT"
  pa_option_type type = PA_OPTION_STRING;
  std::optional<std::string> default_value;
  std::int64_t min = 0;
  std::int64_t max = 0;
  std::vector<std::string> choices;
  std::string help;
};

// PROVISION_PLUGIN_<PLUGIN>_<OPTION> (SPEC section 6).
std::string option_variable(std::string_view plugin, std::string_view option);

// The option's value from the configuration's plugin entries (or its default), validated;
// nullopt when unset. Throws ConfigError naming the variable and the value (exit 78).
std::optional<std::string> option_value(const OptionSpec& option, const Config& config);

struct Plugin {
  std::string path;
  std::string name;
  std::string version;
  std::string description;
  std::vector<ActionSpec> actions;  // declared, then registered in init()
  std::vector<OptionSpec> options;
  std::map<std::string, std::optional<std::string>> option_values;  // validated, by name
  const pa_plugin* descriptor = nullptr;
  void* state = nullptr;
  bool initialised = false;
  std::unique_ptr<PluginHost> host;
  SharedLibrary library;
};

// "update (rotate) [destructive, publishes a key]": an action and its properties in one line, for
// `provision-agent plugins` and `check`.
std::string describe(const ActionSpec& action);

struct SkippedPlugin {
  std::string path;
  std::string reason;
};

class PluginSet {
 public:
  // Loads every *.so in config.plugin_dir in name order, validates each plugin's options and
  // calls init() with its own host table. Throws ConfigError for a loose-permission folder, an
  // invalid option value and two plugins claiming one action (naming both). Plugins that cannot
  // load are skipped with a reason (also logged).
  static PluginSet load(const Config& config, const HostServices& services);

  // The same without init(): descriptors, declared actions and validated options, for `config`.
  static PluginSet describe(const Config& config);

  PluginSet() = default;
  PluginSet(PluginSet&&) noexcept = default;
  PluginSet& operator=(PluginSet&&) noexcept;
  PluginSet(const PluginSet&) = delete;
  PluginSet& operator=(const PluginSet&) = delete;
  ~PluginSet();  // shutdown() and dlclose in reverse load order

  // The plugin serving a canonical action name, and the action's description; nullptr when none.
  const Plugin* find(std::string_view action) const;
  const ActionSpec* action(std::string_view action) const;
  // The canonical name of an action or alias; unknown names are returned unchanged.
  std::string canonical(std::string_view name) const;

  const std::vector<std::unique_ptr<Plugin>>& plugins() const noexcept { return plugins_; }
  const std::vector<SkippedPlugin>& skipped() const noexcept { return skipped_; }

 private:
  static PluginSet open(const Config& config, const HostServices* services);
  void shutdown_all() noexcept;
  std::vector<std::unique_ptr<Plugin>> plugins_;
  std::vector<SkippedPlugin> skipped_;
};

}  // namespace pa::plugin
