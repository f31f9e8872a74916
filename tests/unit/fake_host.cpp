#include "fake_host.hpp"

#include <dlfcn.h>

#include <algorithm>
#include <stdexcept>

// The opaque per-request handle, for this test executable alone.
struct pa_call {
  int id;
};

namespace pa::test {
namespace {

FakeHost& host_of(pa_host_handle* handle) {
  return *handle->host;
}

std::string text(const char* value) {
  return value ? value : "-";
}

int fake_log(pa_host_handle* handle, pa_call*, pa_log_level level, const char* message) {
  if (!message) return PA_ERR_INVALID;
  host_of(handle).logs.emplace_back(level, message);
  return PA_OK;
}

const char* fake_config_get(pa_host_handle* handle, const char* name) {
  FakeHost& host = host_of(handle);
  host.calls.push_back({"config_get", text(name), nullptr});
  const auto it = host.config.find(text(name));
  return it == host.config.end() ? nullptr : it->second.c_str();
}

const char* fake_option_get(pa_host_handle* handle, const char* name) {
  FakeHost& host = host_of(handle);
  host.calls.push_back({"option_get", text(name), nullptr});
  const auto it = host.options.find(text(name));
  return it == host.options.end() ? nullptr : it->second.c_str();
}

int fake_register_action(pa_host_handle* handle, const pa_action* action) {
  FakeHost& host = host_of(handle);
  host.calls.push_back({"register_action", action ? text(action->name) : "-", nullptr});
  if (!host.in_init) return PA_ERR_UNSUPPORTED;
  if (!action || action->struct_size < sizeof(pa_action) || !action->name) return PA_ERR_INVALID;
  host.registered.emplace_back(action->name);
  return PA_OK;
}

int fake_key_exists(pa_host_handle* handle, pa_call* call, int* exists) {
  FakeHost& host = host_of(handle);
  host.calls.push_back({"key_exists", "", call});
  if (!exists) return PA_ERR_INVALID;
  *exists = host.key_exists ? 1 : 0;
  return host.key_exists_status;
}

int fake_key_generate(pa_host_handle* handle, pa_call* call, const char* key_type,
                      int keep_backup) {
  FakeHost& host = host_of(handle);
  host.calls.push_back({"key_generate",
                        "type=" + text(key_type) + " keep_backup=" + std::to_string(keep_backup),
                        call});
  return host.key_generate_status;
}

int fake_key_delete(pa_host_handle* handle, pa_call* call) {
  FakeHost& host = host_of(handle);
  host.calls.push_back({"key_delete", "", call});
  return host.key_delete_status;
}

int fake_publish_key(pa_host_handle* handle, pa_call* call) {
  FakeHost& host = host_of(handle);
  host.calls.push_back({"publish_key", "", call});
  return host.publish_key_status;
}

int fake_clear_published_key(pa_host_handle* handle, pa_call* call) {
  FakeHost& host = host_of(handle);
  host.calls.push_back({"clear_published_key", "", call});
  return host.clear_status;
}

int fake_set_error(pa_host_handle* handle, pa_call* call, const char* code, const char* message) {
  FakeHost& host = host_of(handle);
  host.calls.push_back({"set_error", text(code), call});
  host.error = std::make_pair(text(code), text(message));
  return PA_OK;
}

const char* fake_request_string(pa_host_handle* handle, pa_call* call, const char* name) {
  FakeHost& host = host_of(handle);
  host.calls.push_back({"request_string", text(name), call});
  const auto it = host.request_strings.find(text(name));
  return it == host.request_strings.end() ? nullptr : it->second.c_str();
}

int fake_install_certificate(pa_host_handle* handle, pa_call* call, const char* pem) {
  FakeHost& host = host_of(handle);
  host.calls.push_back({"install_certificate", text(pem), call});
  return host.install_certificate_status;
}

}  // namespace

void LoadedPlugin::Closer::operator()(void* handle) const {
  ::dlclose(handle);
}

LoadedPlugin::LoadedPlugin(const std::string& path)
    : handle_(::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
  if (!handle_) throw std::runtime_error(std::string("dlopen: ") + ::dlerror());
  entry_ = reinterpret_cast<pa_plugin_describe_fn>(::dlsym(handle_.get(), PA_PLUGIN_ENTRY_SYMBOL));
  if (!entry_) throw std::runtime_error(path + " exports no " PA_PLUGIN_ENTRY_SYMBOL);
}

const pa_plugin* LoadedPlugin::describe(std::uint32_t abi_version) const {
  return entry_(abi_version);
}

FakeHost::FakeHost() {
  table_.struct_size = sizeof(pa_host);
  table_.abi_version = PA_PLUGIN_ABI_VERSION;
  table_.handle = &handle_;
  table_.log = fake_log;
  table_.config_get = fake_config_get;
  table_.option_get = fake_option_get;
  table_.register_action = fake_register_action;
  table_.key_exists = fake_key_exists;
  table_.key_generate = fake_key_generate;
  table_.key_delete = fake_key_delete;
  table_.publish_key = fake_publish_key;
  table_.clear_published_key = fake_clear_published_key;
  table_.set_error = fake_set_error;
  table_.request_string = fake_request_string;
  table_.install_certificate = fake_install_certificate;
}

std::vector<std::string> FakeHost::functions() const {
  std::vector<std::string> names;
  for (const HostCall& call : calls) names.push_back(call.function);
  return names;
}

bool FakeHost::logged(pa_log_level level, const std::string& part) const {
  return std::any_of(logs.begin(), logs.end(), [&](const auto& entry) {
    return entry.first == level && entry.second.find(part) != std::string::npos;
  });
}

pa_request FakeRequest::view() const {
  pa_request request{};
  request.struct_size = sizeof(pa_request);
  request.device_id = device_id.c_str();
  request.user_id = user_id ? user_id->c_str() : nullptr;
  request.action = action.c_str();
  request.request_id = request_id ? request_id->c_str() : nullptr;
  request.json = json.c_str();
  request.encrypted = encrypted ? 1 : 0;
  request.force = force ? 1 : 0;
  request.key_type = key_type.c_str();
  return request;
}

pa_call* fake_call() {
  static pa_call call{1};
  return &call;
}

}  // namespace pa::test
