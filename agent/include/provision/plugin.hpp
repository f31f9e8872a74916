// provision/plugin.hpp - a header-only C++ adapter over the plugin ABI in provision/plugin.h.
//
// A plugin becomes a C++ class: constructed in init() with the host, handle() for each request,
// destroyed in shutdown(). Every exception stops at the boundary and becomes a pa_status (and the
// response's error): nothing C++ crosses into the agent, which may be built by another compiler.
//
//   #include <provision/plugin.hpp>
//
//   class Hello {
//    public:
//     explicit Hello(const pa::sdk::Host& host) : greeting_(host.option("GREETING").value_or("hi"))
//     {} void handle(pa::sdk::Call& call) {
//       if (call.device() == "forbidden") throw pa::sdk::Error(PA_ERR_INVALID, "not this one");
//       call.log(PA_LOG_INFO, greeting_ + ", " + call.device());
//     }
//    private:
//     std::string greeting_;
//   };
//
//   static const pa_action hello = {sizeof(pa_action), "hello", nullptr, 0, "says hello", {}};
//   static const pa_action* const actions[] = {&hello, nullptr};
//   PA_SDK_PLUGIN(Hello, "hello", "1.0.0", "says hello", actions, nullptr)
//
// Threads and lifetimes are those of plugin.h: the constructor and destructor run on the main
// thread, handle() on worker threads (concurrently for different devices), so a class whose
// handle() changes shared members must lock.
#ifndef PROVISION_PLUGIN_HPP
#define PROVISION_PLUGIN_HPP

#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "plugin.h"

namespace pa::sdk {

// A failure a plugin reports: the status handle() returns and, when given, the SPEC section 3.3
// code and the message the response carries. Without a message the host's own (for a failed
// host call, what the host already set) stands.
class Error : public std::runtime_error {
 public:
  explicit Error(int status, const std::string& message = {}, std::string code = {})
      : std::runtime_error(message), status_(status), code_(std::move(code)) {}
  int status() const noexcept { return status_; }
  const std::string& code() const noexcept { return code_; }

 private:
  int status_;
  std::string code_;
};

// Throws Error(status) unless status is PA_OK.
inline void check(int status) {
  if (status != PA_OK) throw Error(status);
}

// A non-owning view of the host table, valid from the constructor to the destructor.
class Host {
 public:
  explicit Host(const pa_host* table) noexcept : table_(table) {}

  const pa_host* table() const noexcept { return table_; }

  void log(pa_log_level level, const std::string& message) const noexcept {
    table_->log(table_->handle, nullptr, level, message.c_str());
  }
  // One of the agent's variables ("PROVISION_KEY_TYPE"); nullopt when unset or secret.
  std::optional<std::string> config(const char* name) const {
    const char* value = table_->config_get(table_->handle, name);
    return value ? std::optional<std::string>(value) : std::nullopt;
  }
  // One of this plugin's declared options, validated by the host; nullopt when unset.
  std::optional<std::string> option(const char* name) const {
    const char* value = table_->option_get(table_->handle, name);
    return value ? std::optional<std::string>(value) : std::nullopt;
  }
  // Only from the constructor (which runs inside init()). Throws Error.
  void register_action(const pa_action& action) const {
    check(table_->register_action(table_->handle, &action));
  }

 private:
  const pa_host* table_;
};

// One request inside handle(). Key operations throw Error when the host reports a failure.
class Call {
 public:
  Call(const pa_host* table, pa_call* call, const pa_request& request) noexcept
      : table_(table), call_(call), request_(request) {}

  const pa_request& request() const noexcept { return request_; }
  std::string device() const { return request_.device_id; }
  std::optional<std::string> user() const {
    return request_.user_id ? std::optional<std::string>(request_.user_id) : std::nullopt;
  }
  std::string action() const { return request_.action; }
  std::optional<std::string> request_id() const {
    return request_.request_id ? std::optional<std::string>(request_.request_id) : std::nullopt;
  }
  std::string json() const { return request_.json; }
  bool encrypted() const noexcept { return request_.encrypted != 0; }
  bool force() const noexcept { return request_.force != 0; }
  std::string key_type() const { return request_.key_type; }

  void log(pa_log_level level, const std::string& message) const noexcept {
    table_->log(table_->handle, call_, level, message.c_str());
  }
  bool key_exists() const {
    int exists = 0;
    check(table_->key_exists(table_->handle, call_, &exists));
    return exists != 0;
  }
  void generate_key(const char* key_type = nullptr, bool keep_backup = false) const {
    check(table_->key_generate(table_->handle, call_, key_type, keep_backup ? 1 : 0));
  }
  void delete_keys() const { check(table_->key_delete(table_->handle, call_)); }
  void publish_key() const { check(table_->publish_key(table_->handle, call_)); }
  void clear_published_key() const { check(table_->clear_published_key(table_->handle, call_)); }

  pa_call* raw() const noexcept { return call_; }

 private:
  const pa_host* table_;
  pa_call* call_;
  const pa_request& request_;
};

// The C functions of a descriptor for a plugin class T: T(const Host&), void T::handle(Call&).
template <class T>
struct Adapter {
  struct State {
    Host host;
    std::unique_ptr<T> plugin;
  };

  static int init(const pa_host* host, void** state) noexcept {
    const Host view(host);
    try {
      auto made = std::make_unique<State>(State{view, nullptr});
      made->plugin = std::make_unique<T>(made->host);
      *state = made.release();  // owned by the host until shutdown() takes it back
      return PA_OK;
    } catch (const Error& error) {
      if (error.what()[0] != '\0') view.log(PA_LOG_ERROR, error.what());
      return error.status() != PA_OK ? error.status() : PA_ERR_FAILED;
    } catch (const std::bad_alloc&) {
      return PA_ERR_NO_MEMORY;
    } catch (const std::exception& error) {
      view.log(PA_LOG_ERROR, error.what());
      return PA_ERR_FAILED;
    } catch (...) {
      return PA_ERR_FAILED;
    }
  }

  static int handle(void* state, pa_call* call, const pa_request* request) noexcept {
    State& s = *static_cast<State*>(state);
    const pa_host* table = s.host.table();
    try {
      Call view(table, call, *request);
      s.plugin->handle(view);
      return PA_OK;
    } catch (const Error& error) {
      if (error.what()[0] != '\0' || !error.code().empty())
        table->set_error(table->handle, call, error.code().empty() ? nullptr : error.code().c_str(),
                         error.what());
      return error.status() != PA_OK ? error.status() : PA_ERR_FAILED;
    } catch (const std::bad_alloc&) {
      return PA_ERR_NO_MEMORY;
    } catch (const std::exception& error) {
      table->set_error(table->handle, call, "plugin_failed", error.what());
      return PA_ERR_FAILED;
    } catch (...) {
      table->set_error(table->handle, call, "plugin_failed", "unknown exception");
      return PA_ERR_FAILED;
    }
  }

  static void shutdown(void* state) noexcept {
    std::unique_ptr<State> owned(static_cast<State*>(state));
  }

  static constexpr pa_plugin describe(const char* name, const char* version,
                                      const char* description, const pa_action* const* actions,
                                      const pa_option* const* options) noexcept {
    return pa_plugin{sizeof(pa_plugin),
                     PA_PLUGIN_ABI_VERSION,
                     name,
                     version,
                     description,
                     actions,
                     options,
                     &init,
                     &handle,
                     &shutdown,
                     {}};
  }
};

}  // namespace pa::sdk

// Defines the descriptor and the entry point for a plugin class.
#define PA_SDK_PLUGIN(Type, name, version, description, actions, options)               \
  static constexpr pa_plugin pa_sdk_descriptor =                                        \
      ::pa::sdk::Adapter<Type>::describe(name, version, description, actions, options); \
  PA_PLUGIN_DEFINE(pa_sdk_descriptor)

#endif  // PROVISION_PLUGIN_HPP
