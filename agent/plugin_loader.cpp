#include "plugin_loader.hpp"

#include <dlfcn.h>
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>

#include "config.hpp"
#include "keystore/key_store.hpp"
#include "log.hpp"

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
    if (descriptor && descriptor->shutdown) descriptor->shutdown((*it)->state);
  }
  while (!plugins_.empty()) plugins_.pop_back();  // dlclose in reverse order too
}

const Plugin* PluginSet::find(std::string_view action) const {
  for (const auto& plugin : plugins_)
    if (std::find(plugin->actions.begin(), plugin->actions.end(), action) != plugin->actions.end())
      return plugin.get();
  return nullptr;
}

PluginSet PluginSet::load(const std::string& dir, const pa_host* host) {
  namespace fs = std::filesystem;
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

  std::map<std::string, std::string> owner_of_action;  // action -> plugin path
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
    auto plugin =
        std::make_unique<Plugin>(Plugin{path, {}, {}, {}, nullptr, nullptr, std::move(*library)});
    auto entry =
        reinterpret_cast<pa_plugin_entry_fn>(plugin->library.symbol(PA_PLUGIN_ENTRY_SYMBOL));
    if (!entry) {
      const char* error = dlerror();
      skip(fmt::format("missing symbol {} ({})", PA_PLUGIN_ENTRY_SYMBOL,
                       error ? error : "not exported"));
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
    if (descriptor->struct_size < sizeof(pa_plugin)) {
      skip(fmt::format("descriptor is {} bytes, expected at least {}", descriptor->struct_size,
                       sizeof(pa_plugin)));
      continue;
    }
    if (!descriptor->name || !descriptor->handle || !descriptor->init || !descriptor->actions) {
      skip("descriptor lacks a name, actions, init or handle");
      continue;
    }
    plugin->name = descriptor->name;
    plugin->version = descriptor->version ? descriptor->version : "";
    for (const char* const* action = descriptor->actions; *action; ++action)
      plugin->actions.emplace_back(*action);
    // A plugin may serve no action yet (exec with nothing configured): it loads and sits idle.
    for (const auto& action : plugin->actions) {
      auto [it, inserted] = owner_of_action.emplace(action, path);
      if (!inserted)
        throw ConfigError(fmt::format("plugins {} and {} both claim the action \"{}\"; remove one",
                                      it->second, path, action));
    }
    const int rc = descriptor->init(host, &plugin->state);
    if (rc != PA_OK) {
      for (const auto& action : plugin->actions) owner_of_action.erase(action);
      skip(fmt::format("init failed with status {}", rc));
      continue;
    }
    plugin->descriptor = descriptor;
    log_info("plugin {} {} loaded from {} for {}", plugin->name, plugin->version, path,
             fmt::join(plugin->actions, ", "));
    set.plugins_.push_back(std::move(plugin));
  }
  return set;
}

}  // namespace pa::plugin
