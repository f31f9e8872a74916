#pragma once
// A plugin under test without the agent (collectd's plugin mock is the idea): the real .so loaded
// with dlopen as the loader loads it, its descriptor read through the declared entry point, and a
// pa_host table whose functions record every call and answer as a test scripts them.
#include <provision/plugin.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pa::test {
class FakeHost;
}

// The host's opaque handle, defined for this test executable alone (the agent's is in
// agent/dispatch/host.cpp, which is not linked in).
struct pa_host_handle {
  pa::test::FakeHost* host;
};

namespace pa::test {

// A loaded plugin file (RTLD_NOW | RTLD_LOCAL, closed on destruction).
class LoadedPlugin {
 public:
  explicit LoadedPlugin(const std::string& path);
  // The descriptor pa_plugin_describe returns for `abi_version` (nullptr when it refuses it).
  const pa_plugin* describe(std::uint32_t abi_version = PA_PLUGIN_ABI_VERSION) const;

 private:
  struct Closer {
    void operator()(void* handle) const;
  };
  std::unique_ptr<void, Closer> handle_;
  pa_plugin_describe_fn entry_ = nullptr;
};

// One host function call as the plugin made it.
struct HostCall {
  std::string function;  // "key_generate"
  std::string detail;    // its arguments beside handle and call: "type=- keep_backup=1"
  const pa_call* call;   // the request it was for (nullptr from init)
};

class FakeHost {
 public:
  FakeHost();
  FakeHost(const FakeHost&) = delete;
  FakeHost& operator=(const FakeHost&) = delete;

  const pa_host* table() const { return &table_; }

  // What the host answers.
  std::map<std::string, std::string> options;  // option_get by name
  std::map<std::string, std::string> config;   // config_get by name
  bool key_exists = false;
  int key_exists_status = PA_OK;
  int key_generate_status = PA_OK;
  int key_delete_status = PA_OK;
  int publish_key_status = PA_OK;
  int clear_status = PA_OK;
  std::map<std::string, std::string> request_strings;  // request_string by member name
  int install_certificate_status = PA_OK;
  bool in_init = true;  // register_action is allowed only then

  // What the plugin did.
  std::vector<HostCall> calls;  // every call but log's, in order
  std::vector<std::pair<pa_log_level, std::string>> logs;
  std::vector<std::string> registered;                       // actions added with register_action
  std::optional<std::pair<std::string, std::string>> error;  // set_error's code and message

  // The calls' function names, in order.
  std::vector<std::string> functions() const;
  // Whether a log line at `level` contains `text`.
  bool logged(pa_log_level level, const std::string& text) const;

 private:
  pa_host_handle handle_{this};
  pa_host table_{};
};

// A request as the host passes it to handle(); the strings are owned here.
struct FakeRequest {
  std::string device_id = "pH01";
  std::optional<std::string> user_id;
  std::string action;
  std::optional<std::string> request_id;
  std::string json = "{}";
  bool encrypted = false;
  bool force = false;
  std::string key_type = "ec-p256";

  pa_request view() const;
};

// The opaque per-request handle: only its address matters to a plugin.
pa_call* fake_call();

}  // namespace pa::test
