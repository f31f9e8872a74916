#include "dispatch/plugin_loader.hpp"

#include <dlfcn.h>
#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstddef>
#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <variant>

#include "base/log.hpp"
#include "base/text.hpp"
#include "config/config.hpp"
#include "keystore/errors.hpp"
#include "keystore/identifier.hpp"
#include "keystore/permissions.hpp"

namespace pa::plugin {

SharedLibrary SharedLibrary::open(const std::string& path) {
  // RTLD_LOCAL keeps one plugin's symbols from satisfying another's (mosquitto's RTLD_GLOBAL
  // does not); RTLD_NOW reports a missing dependency now, not mid-request.
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    const char* error = dlerror();
    throw std::runtime_error(error ? error : "dlopen failed");
  }
  return SharedLibrary(handle);
}

SharedLibrary& SharedLibrary::operator=(SharedLibrary&& other) noexcept {
  if (this != &other) {
    if (handle_) dlclose(handle_);
    handle_ = other.handle_;
    other.handle_ = nullptr;
  }
  return *this;
}

SharedLibrary::~SharedLibrary() {
  if (handle_) dlclose(handle_);
}

void* SharedLibrary::symbol(const char* name) const {
  return dlsym(handle_, name);
}

PluginSet& PluginSet::operator=(PluginSet&& other) noexcept {
  if (this != &other) {
    shutdown_all();
    plugins_ = std::move(other.plugins_);
    skipped_ = std::move(other.skipped_);
  }
  return *this;
}

PluginSet::~PluginSet() {
  shutdown_all();
}

void PluginSet::shutdown_all() noexcept {
  for (auto it = plugins_.rbegin(); it != plugins_.rend(); ++it) {
    const pa_plugin* descriptor = (*it)->descriptor;
    if ((*it)->initialised && descriptor && descriptor->shutdown)
      descriptor->shutdown((*it)->state);
  }
  while (!plugins_.empty()) plugins_.pop_back();  // dlclose in reverse order too
}

namespace {

bool valid_plugin_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

bool valid_option_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

std::vector<std::string> string_list(const char* const* list) {
  std::vector<std::string> out;
  for (; list && *list; ++list) out.emplace_back(*list);
  return out;
}

// A pa_action copied, or why it cannot be used.
std::variant<ActionSpec, std::string> copy_action(const pa_action* action) {
  if (!action || action->struct_size < offsetof(pa_action, reserved))
    return std::string("an action description is missing or too small");
  if (!action->name || !keystore::is_valid_identifier(action->name))
    return fmt::format(
        "the action name \"{}\" is not 1-128 of A-Z a-z 0-9 . _ - starting with a "
        "letter or digit",
        action->name ? escape_controls(action->name) : "");
  ActionSpec spec{action->name, string_list(action->aliases), action->flags,
                  action->help ? action->help : ""};
  for (const auto& alias : spec.aliases)
    if (!keystore::is_valid_identifier(alias))
      return fmt::format("the alias \"{}\" of {} is not a valid action name",
                         escape_controls(alias), spec.name);
  return spec;
}

std::variant<OptionSpec, std::string> copy_option(const std::string& plugin,
                                                  const pa_option* option) {
  if (!option || option->struct_size < offsetof(pa_option, reserved))
    return std::string("an option description is missing or too small");
  if (!option->name || !valid_option_name(option->name))
    return fmt::format("the option name \"{}\" is not A-Z 0-9 _",
                       option->name ? escape_controls(option->name) : "");
  if (option->type < PA_OPTION_STRING || option->type > PA_OPTION_PATH)
    return fmt::format("the option {} has an unknown type {}", option->name,
                       static_cast<int>(option->type));
  OptionSpec spec;
  spec.name = option->name;
  spec.variable = option_variable(plugin, spec.name);
  spec.type = option->type;
  if (option->default_value) spec.default_value = option->default_value;
  spec.min = option->min;
  spec.max = option->max;
  spec.choices = string_list(option->choices);
  spec.help = option->help ? option->help : "";
  return spec;
}

}  // namespace

std::string option_variable(std::string_view plugin, std::string_view option) {
  std::string name = "PROVISION_PLUGIN_";
  for (char c : plugin)
    name += c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  name += '_';
  name += option;
  return name;
}

std::optional<std::string> option_value(const OptionSpec& option, const Config& config) {
  std::optional<std::string> raw = option.default_value;
  bool configured = false;
  if (const auto it = config.plugin_entries.find(option.variable);
      it != config.plugin_entries.end()) {
    raw = it->second.value;
    configured = true;
  }
  if (!raw) return std::nullopt;
  const std::string& text = *raw;
  // A default the plugin wrote is validated too: a plugin with a bad default is a bad plugin.
  auto fail = [&](const std::string& why) -> std::optional<std::string> {
    throw ConfigError(fmt::format("invalid {}={}: {}{}", option.variable, pa::quoted(text), why,
                                  configured ? "" : " (the plugin's own default)"));
  };
  switch (option.type) {
    case PA_OPTION_INT: {
      std::int64_t number = 0;
      const char* end = text.data() + text.size();
      const auto [ptr, ec] = std::from_chars(text.data(), end, number);
      if (text.empty() || ec != std::errc() || ptr != end || number < option.min ||
          number > option.max)
        return fail(fmt::format("expected an integer {}..{}", option.min, option.max));
      return std::to_string(number);
    }
    case PA_OPTION_BOOL: {
      const std::optional<bool> value = parse_boolean(text);
      if (!value) return fail("expected true/false, 1/0, yes/no or on/off");
      return *value ? "true" : "false";
    }
    case PA_OPTION_PATH:
      if (text.empty() || text.front() != '/') return fail("expected an absolute path");
      return text;
    case PA_OPTION_STRING:
      if (!option.choices.empty() &&
          std::find(option.choices.begin(), option.choices.end(), text) == option.choices.end())
        return fail(fmt::format("expected one of {}", fmt::join(option.choices, ", ")));
      return text;
  }
  return fail("unknown option type");
}

std::string describe(const ActionSpec& action) {
  std::string text = action.name;
  if (!action.aliases.empty()) text += fmt::format(" ({})", fmt::join(action.aliases, ", "));
  std::vector<std::string> properties;
  if ((action.flags & PA_ACTION_DESTRUCTIVE) != 0)
    properties.emplace_back("destructive");
  else if ((action.flags & PA_ACTION_DESTRUCTIVE_FORCED) != 0)
    properties.emplace_back("destructive when forced");
  if (action.publishes_key()) properties.emplace_back("publishes a key");
  if (!properties.empty()) text += fmt::format(" [{}]", fmt::join(properties, ", "));
  return text;
}

const Plugin* PluginSet::find(std::string_view action) const {
  for (const auto& plugin : plugins_)
    for (const ActionSpec& spec : plugin->actions)
      if (spec.name == action) return plugin.get();
  return nullptr;
}

const ActionSpec* PluginSet::action(std::string_view action) const {
  for (const auto& plugin : plugins_)
    for (const ActionSpec& spec : plugin->actions)
      if (spec.name == action ||
          std::find(spec.aliases.begin(), spec.aliases.end(), action) != spec.aliases.end())
        return &spec;
  return nullptr;
}

std::string PluginSet::canonical(std::string_view name) const {
  const ActionSpec* spec = action(name);
  return spec ? spec->name : std::string(name);
}

PluginSet PluginSet::load(const Config& config, const HostServices& services) {
  return open(config, &services);
}

PluginSet PluginSet::describe(const Config& config) {
  return open(config, nullptr);
}

PluginSet PluginSet::open(const Config& config, const HostServices* services) {
  namespace fs = std::filesystem;
  const std::string& dir = config.plugin_dir;
  PluginSet set;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw ConfigError(fmt::format("invalid PROVISION_PLUGIN_DIR=\"{}\": not a folder", dir));
  try {
    keystore::require_private_path(dir);
  } catch (const keystore::PermissionError& error) {
    throw ConfigError(fmt::format("invalid PROVISION_PLUGIN_DIR=\"{}\": {}", dir, error.what()));
  }

  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".so" && entry.is_regular_file(ec))
      files.push_back(entry.path());
  std::sort(files.begin(), files.end());

  // Every action name and alias -> the plugin serving it, so no two plugins claim one.
  std::map<std::string, std::string> owner_of;
  std::set<std::string> declared_variables;
  auto claim = [&](const ActionSpec& spec, const std::string& path) {
    std::vector<std::string> names{spec.name};
    names.insert(names.end(), spec.aliases.begin(), spec.aliases.end());
    for (const auto& name : names) {
      const auto [it, inserted] = owner_of.emplace(name, path);
      if (!inserted)
        throw ConfigError(fmt::format("plugins {} and {} both claim the action \"{}\"; remove one",
                                      it->second, path, name));
    }
  };
  for (const auto& file : files) {
    const std::string path = file.string();
    auto skip = [&](std::string reason) {
      log_error("plugin {} skipped: {}", path, reason);
      set.skipped_.push_back({path, std::move(reason)});
    };
    try {
      keystore::require_private_path(file);
    } catch (const keystore::PermissionError& error) {
      skip(error.what());
      continue;
    }
    std::optional<SharedLibrary> library;
    try {
      library.emplace(SharedLibrary::open(path));
    } catch (const std::runtime_error& error) {
      skip(fmt::format("cannot load: {}", error.what()));
      continue;
    }
    auto plugin = std::make_unique<Plugin>(Plugin{
        path, {}, {}, {}, {}, {}, {}, nullptr, nullptr, false, nullptr, std::move(*library)});
    auto entry =
        reinterpret_cast<pa_plugin_describe_fn>(plugin->library.symbol(PA_PLUGIN_ENTRY_SYMBOL));
    if (!entry) {
      // Built against the pre-release header (ABI 1 was frozen only at the first release).
      if (plugin->library.symbol("pa_plugin_entry"))
        skip(
            "built against the pre-release plugin ABI (it exports pa_plugin_entry); rebuild it "
            "against this version's provision/plugin.h, whose entry point is pa_plugin_describe");
      else
        skip(
            fmt::format("missing symbol {} (build it with PA_PLUGIN_DEFINE and check that the "
                        "symbol is exported: nm -D {})",
                        PA_PLUGIN_ENTRY_SYMBOL, path));
      continue;
    }
    const pa_plugin* descriptor = entry(PA_PLUGIN_ABI_VERSION);
    if (!descriptor) {
      skip(fmt::format("does not support plugin ABI version {}", PA_PLUGIN_ABI_VERSION));
      continue;
    }
    if (descriptor->abi_version != PA_PLUGIN_ABI_VERSION) {
      skip(fmt::format("built for plugin ABI version {}, this agent speaks version {}",
                       descriptor->abi_version, PA_PLUGIN_ABI_VERSION));
      continue;
    }
    // Version 1's fields end where `reserved` begins; a newer plugin's larger descriptor is fine.
    if (descriptor->struct_size < offsetof(pa_plugin, reserved)) {
      skip(fmt::format("descriptor is {} bytes, ABI version 1's is at least {}",
                       descriptor->struct_size, offsetof(pa_plugin, reserved)));
      continue;
    }
    if (!descriptor->name || !valid_plugin_name(descriptor->name) || !descriptor->handle ||
        !descriptor->init) {
      skip("descriptor lacks a valid name (A-Z a-z 0-9 - _), init or handle");
      continue;
    }
    plugin->name = descriptor->name;
    plugin->version = descriptor->version ? descriptor->version : "";
    plugin->description = descriptor->description ? descriptor->description : "";
    std::string problem;
    for (const pa_action* const* it = descriptor->actions; it && *it && problem.empty(); ++it) {
      auto copied = copy_action(*it);
      if (auto* why = std::get_if<std::string>(&copied))
        problem = *why;
      else
        plugin->actions.push_back(std::get<ActionSpec>(std::move(copied)));
    }
    for (const pa_option* const* it = descriptor->options; it && *it && problem.empty(); ++it) {
      auto copied = copy_option(plugin->name, *it);
      if (auto* why = std::get_if<std::string>(&copied))
        problem = *why;
      else
        plugin->options.push_back(std::get<OptionSpec>(std::move(copied)));
    }
    if (!problem.empty()) {
      skip(problem);
      continue;
    }
    // A wrong value of a plugin's option stops start-up like a wrong agent variable (exit 78).
    for (const OptionSpec& option : plugin->options) {
      plugin->option_values[option.name] = option_value(option, config);
      declared_variables.insert(option.variable);
    }
    for (const ActionSpec& spec : plugin->actions) claim(spec, path);

    if (services) {
      plugin->host = std::make_unique<PluginHost>(*services, plugin->option_values);
      Plugin& loading = *plugin;
      std::optional<ConfigError> conflict;
      plugin->host->open_registration([&](const pa_action* action) -> int {
        auto copied = copy_action(action);
        if (auto* why = std::get_if<std::string>(&copied)) {
          log_error("plugin {}: register_action refused: {}", loading.name, *why);
          return PA_ERR_INVALID;
        }
        try {
          claim(std::get<ActionSpec>(copied), loading.path);
        } catch (const ConfigError& error) {
          log_error("plugin {}: {}", loading.name, error.what());
          if (!conflict) conflict = error;
          return PA_ERR_FAILED;
        }
        loading.actions.push_back(std::get<ActionSpec>(std::move(copied)));
        return PA_OK;
      });
      const int rc = descriptor->init(plugin->host->table(), &plugin->state);
      plugin->host->close_registration();
      // A claimed action stops start-up whatever init() made of the refusal.
      if (conflict) {
        if (rc == PA_OK && descriptor->shutdown) descriptor->shutdown(plugin->state);
        throw *conflict;
      }
      if (rc != PA_OK) {
        for (const ActionSpec& spec : plugin->actions) {
          owner_of.erase(spec.name);
          for (const auto& alias : spec.aliases) owner_of.erase(alias);
        }
        skip(fmt::format("init failed with {} ({})", pa_status_name(rc), rc));
        continue;
      }
      plugin->initialised = true;
    }
    plugin->descriptor = descriptor;
    std::vector<std::string> names;
    for (const ActionSpec& spec : plugin->actions) names.push_back(spec.name);
    log_info(
        "plugin {} {} loaded from {} for {}", plugin->name, plugin->version, path,
        names.empty() ? std::string("(no actions)") : fmt::format("{}", fmt::join(names, ", ")));
    set.plugins_.push_back(std::move(plugin));
  }
  // A PROVISION_PLUGIN_* variable no plugin reads is most likely a typo.
  for (const auto& [name, entry] : config.plugin_entries)
    if (!declared_variables.count(name))
      log_warning("{} is set ({}) but no loaded plugin has that option", name,
                  to_string(entry.source));
  return set;
}

}  // namespace pa::plugin
