#pragma once
// Plugin loading (SPEC section 6): dlopen with RTLD_NOW|RTLD_LOCAL, the versioned handshake,
// size checks, duplicate-action refusal, clear skip reasons, shutdown in reverse load order.
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

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

struct Plugin {
  std::string path;
  std::string name;
  std::string version;
  std::vector<std::string> actions;
  const pa_plugin* descriptor = nullptr;
  void* state = nullptr;
  SharedLibrary library;
};

struct SkippedPlugin {
  std::string path;
  std::string reason;
};

class PluginSet {
 public:
  // Loads every *.so in `dir` in name order. Throws ConfigError for a loose-permission folder
  // and for two plugins claiming one action (naming both). Plugins that cannot load are skipped
  // with a reason (also logged).
  static PluginSet load(const std::string& dir, const pa_host* host);

  PluginSet() = default;
  PluginSet(PluginSet&&) noexcept = default;
  PluginSet& operator=(PluginSet&&) noexcept;
  PluginSet(const PluginSet&) = delete;
  PluginSet& operator=(const PluginSet&) = delete;
  ~PluginSet();  // shutdown() and dlclose in reverse load order

  const Plugin* find(std::string_view action) const;
  const std::vector<std::unique_ptr<Plugin>>& plugins() const noexcept { return plugins_; }
  const std::vector<SkippedPlugin>& skipped() const noexcept { return skipped_; }

 private:
  void shutdown_all() noexcept;
  std::vector<std::unique_ptr<Plugin>> plugins_;
  std::vector<SkippedPlugin> skipped_;
};

}  // namespace pa::plugin
