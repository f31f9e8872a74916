#include "dispatch/host.hpp"

#include <fmt/format.h>
#include <rapidjson/document.h>

#include <chrono>
#include <cstdint>

#include "base/json_writer.hpp"
#include "base/log.hpp"
#include "base/time.hpp"
#include "intake/envelope.hpp"
#include "keystore/errors.hpp"
#include "keystore/x509.hpp"

namespace pa {
namespace {

LogFields fields_of(const pa_call* call) {
  if (!call || !call->request) return {};
  const Request& r = *call->request;
  return LogFields{r.device_id, r.user_id ? std::string_view(*r.user_id) : std::string_view(),
                   r.action,    r.request_id ? std::string_view(*r.request_id) : std::string_view(),
                   {},          {}};
}

LogLevel level_of(pa_log_level level) {
  switch (level) {
    case PA_LOG_DEBUG:
      return LogLevel::debug;
    case PA_LOG_INFO:
      return LogLevel::info;
    case PA_LOG_WARNING:
      return LogLevel::warning;
    case PA_LOG_ERROR:
      return LogLevel::error;
  }
  return LogLevel::info;
}

int host_log(pa_host_handle* /*host*/, pa_call* call, pa_log_level level, const char* message) {
  if (!message) return PA_ERR_INVALID;
  log_write(level_of(level), fields_of(call), message);
  return PA_OK;
}

const char* host_config_get(pa_host_handle* host, const char* name) {
  if (!host || !name || !host->services->config) return nullptr;
  const auto& entries = host->services->config->entries;
  auto it = entries.find(name);
  if (it == entries.end() || (!it->second.set && it->second.value.empty())) return nullptr;
  for (const auto& variable : config_variables())
    if (variable.secret && name == std::string_view(variable.env)) return nullptr;
  return it->second.value.c_str();
}

const char* host_option_get(pa_host_handle* host, const char* name) {
  if (!host || !name) return nullptr;
  const auto it = host->options.find(name);
  return it == host->options.end() || !it->second ? nullptr : it->second->c_str();
}

int host_register_action(pa_host_handle* host, const pa_action* action) {
  if (!host || !host->in_init || !host->register_action) return PA_ERR_UNSUPPORTED;
  return host->register_action(action);
}

// Functions with a call need one from handle(), and a key store (not in `plugins` or `config`).
bool usable(const pa_call* call) {
  return call && call->request && call->services && call->services->store;
}

int host_key_exists(pa_host_handle* /*host*/, pa_call* call, int* exists) {
  if (!usable(call) || !exists) return PA_ERR_INVALID;
  try {
    const Request& r = *call->request;
    *exists = call->services->store->has_keys(r.user_id, r.device_id) ? 1 : 0;
    return PA_OK;
  } catch (const std::exception& error) {
    log_write(LogLevel::error, fields_of(call), fmt::format("key store: {}", error.what()));
    return PA_ERR_STORAGE;
  }
}

// Records a key operation of `call`'s request in the audit log (SPEC section 5).
void audit_operation(const pa_call* call, const char* action, bool ok,
                     std::optional<std::string> fingerprint,
                     std::optional<std::string> previous_fingerprint) {
  if (!call->services->audit) return;
  const Request& r = *call->request;
  call->services->audit->record(audit::Record{action, r.device_id, r.user_id, r.request_id,
                                              std::move(fingerprint),
                                              std::move(previous_fingerprint), ok});
}

// The device's stored key; loading repairs a missing or mismatched public key file (SPEC 5),
// which is logged and audited. Throws StoreError.
std::optional<keystore::StoredKey> load_key(const pa_call* call) {
  const Request& r = *call->request;
  auto key = call->services->store->load(r.user_id, r.device_id);
  if (key && key->repaired) {
    log_write(LogLevel::warning, fields_of(call),
              "sensor_public.pem was missing or did not match the private key; rewrote it");
    audit_operation(call, "repair", true, key->fingerprint, std::nullopt);
  }
  return key;
}

// The fingerprint of the device's current key, or none. Throws StoreError.
std::optional<std::string> current_fingerprint(const pa_call* call) {
  const Request& r = *call->request;
  keystore::KeyStore& store = *call->services->store;
  if (!store.has_keys(r.user_id, r.device_id)) return std::nullopt;
  const auto key = load_key(call);
  if (!key) return std::nullopt;
  return key->fingerprint;
}

enum class Change { proceed, already_done, failed };

// What a key change did, for the audit log.
struct KeyChange {
  bool attempted = false;             // got past the request's own checks to the key store
  std::optional<std::string> before;  // the device key's fingerprint before the change
  std::optional<std::string> after;   // ... and after it
};

// Before a key change (SPEC 3.4): either this request is served again after a crash and the
// change it began was completed (the key is no longer the one recorded), or the change is
// recorded now, fsynced, before anything is touched.
Change prepare_change(pa_call* call, KeyChange& change) {
  change.attempted = true;
  try {
    const std::optional<std::string> current = current_fingerprint(call);
    change.before = call->redo ? call->redo->fingerprint_before : current;
    if (call->redo) {
      if (current != call->redo->fingerprint_before) {
        change.after = current;
        log_write(LogLevel::info, fields_of(call),
                  "this request's key change was completed before the agent restarted; not "
                  "repeating it");
        return Change::already_done;
      }
      return Change::proceed;
    }
    if (call->intent_recorded || !call->services->begin_change) return Change::proceed;
    if (!call->services->begin_change(call->seq, ChangeIntent{current})) {
      call->error = RequestError{ErrorCode::storage_failed,
                                 "cannot record the key change in the intake spool"};
      return Change::failed;
    }
    call->intent_recorded = true;
    return Change::proceed;
  } catch (const std::exception& error) {
    log_write(LogLevel::error, fields_of(call), fmt::format("key store: {}", error.what()));
    call->error = RequestError{ErrorCode::storage_failed, "cannot read the stored key"};
    return Change::failed;
  }
}

int generate_key(pa_call* call, const char* key_type, int keep_backup, KeyChange& change) {
  const Request& r = *call->request;
  const std::string type_name = key_type ? key_type : call->c_request.key_type;
  auto type = keystore::parse_key_type(type_name);
  if (!type) {
    call->error =
        RequestError{ErrorCode::invalid_request, fmt::format("unknown key type \"{}\"", type_name)};
    return PA_ERR_INVALID;
  }
  switch (prepare_change(call, change)) {
    case Change::already_done:
      return PA_OK;  // publish_key publishes the pair the first run stored
    case Change::failed:
      return PA_ERR_STORAGE;
    case Change::proceed:
      break;
  }
  keystore::KeyPair pair;  // its private key is wiped when it goes
  try {
    // SPEC 3.4: a pair generated ahead when there is one of this type; else generated now.
    std::optional<keystore::KeyPair> pooled;
    if (call->services->key_pool) pooled = call->services->key_pool->take(*type);
    if (pooled) {
      pair = std::move(*pooled);
    } else {
      const auto started = std::chrono::steady_clock::now();
      pair = keystore::generate_key_pair(*type);
      if (call->services->key_generated)
        call->services->key_generated(*type, std::chrono::steady_clock::now() - started);
    }
  } catch (const std::exception& error) {
    log_write(LogLevel::error, fields_of(call), fmt::format("key generation: {}", error.what()));
    call->error = RequestError{ErrorCode::keygen_failed, "key generation failed"};
    return PA_ERR_KEYGEN;
  }
  try {
    call->stored = call->services->store->store(r.user_id, r.device_id, pair, keep_backup != 0);
  } catch (const keystore::QuotaError& error) {
    log_write(LogLevel::warning, fields_of(call), error.what());
    call->error = RequestError{
        ErrorCode::quota_exceeded,
        fmt::format("the key store holds {} key pairs, the most PROVISION_MAX_DEVICES allows",
                    error.limit())};
    return PA_ERR_QUOTA;
  } catch (const keystore::CollisionError& error) {
    log_write(LogLevel::warning, fields_of(call), error.what());
    call->error = RequestError{ErrorCode::storage_failed, error.what()};
    return PA_ERR_STORAGE;
  } catch (const std::exception& error) {
    log_write(LogLevel::error, fields_of(call), fmt::format("key store: {}", error.what()));
    call->error = RequestError{ErrorCode::storage_failed, "cannot store the key pair"};
    return PA_ERR_STORAGE;
  }
  change.after = call->stored->fingerprint;
  log_write(LogLevel::info, fields_of(call),
            fmt::format("generated a {} key pair", keystore::to_string(*type)));
  return PA_OK;
}

int host_key_generate(pa_host_handle* /*host*/, pa_call* call, const char* key_type,
                      int keep_backup) {
  if (!usable(call)) return PA_ERR_INVALID;
  KeyChange change;
  const int status = generate_key(call, key_type, keep_backup, change);
  if (change.attempted)
    audit_operation(call, call->request->action == kActionUpdate ? "update" : "generate",
                    status == PA_OK, change.after, change.before);
  return status;
}

int delete_key(pa_call* call, KeyChange& change) {
  const Request& r = *call->request;
  switch (prepare_change(call, change)) {
    case Change::already_done:
      return PA_OK;
    case Change::failed:
      return PA_ERR_STORAGE;
    case Change::proceed:
      break;
  }
  try {
    // With a user, the device's legacy folder goes too, as the original agent removed both.
    if (!call->services->store->remove(
            r.user_id, r.device_id,
            r.user_id ? keystore::LegacyKeys::remove : keystore::LegacyKeys::keep)) {
      call->error = RequestError{ErrorCode::not_found, "the device has no keys"};
      return PA_ERR_NOT_FOUND;
    }
  } catch (const std::exception& error) {
    log_write(LogLevel::error, fields_of(call), fmt::format("key store: {}", error.what()));
    call->error = RequestError{ErrorCode::storage_failed, "cannot remove the keys"};
    return PA_ERR_STORAGE;
  }
  return PA_OK;
}

int host_key_delete(pa_host_handle* /*host*/, pa_call* call) {
  if (!usable(call)) return PA_ERR_INVALID;
  KeyChange change;
  const int status = delete_key(call, change);
  if (change.attempted)
    audit_operation(call, "delete", status == PA_OK, change.after, change.before);
  return status;
}

std::string keys_topic(const Config& config, const std::string& device) {
  return topics::public_key(config.keys_topic_base, device);
}

int host_publish_key(pa_host_handle* /*host*/, pa_call* call) {
  if (!usable(call)) return PA_ERR_INVALID;
  return publish_stored_key(*call);
}

int host_clear_published_key(pa_host_handle* /*host*/, pa_call* call) {
  if (!usable(call)) return PA_ERR_INVALID;
  const HostServices& services = *call->services;
  // An empty retained message removes the broker's retained key (SPEC section 3).
  const auto id =
      services.publish(keys_topic(*services.config, call->request->device_id), "", true);
  if (!id) return PA_ERR_PUBLISH;
  call->message_ids.push_back(*id);
  return PA_OK;
}

const char* host_request_string(pa_host_handle* /*host*/, pa_call* call, const char* name) {
  if (!call || !call->request || !name) return nullptr;
  rapidjson::Document doc;
  doc.Parse(call->request->json.data(), call->request->json.size());  // as validated: unique names
  if (doc.HasParseError() || !doc.IsObject()) return nullptr;
  const auto it = doc.FindMember(name);
  if (it == doc.MemberEnd() || !it->value.IsString()) return nullptr;
  return call->strings.emplace_back(it->value.GetString(), it->value.GetStringLength()).c_str();
}

int host_install_certificate(pa_host_handle* /*host*/, pa_call* call, const char* pem) {
  if (!usable(call) || !pem) return PA_ERR_INVALID;
  const Request& r = *call->request;
  const HostServices& services = *call->services;
  try {
    const auto key = services.store->load(r.user_id, r.device_id);
    if (!key) {
      call->error = RequestError{ErrorCode::not_found, "the device has no keys to certify"};
      return PA_ERR_NOT_FOUND;
    }
    const keystore::CertificateInfo info = keystore::check_certificate(
        pem, key->public_pem, static_cast<std::int64_t>(std::time(nullptr)),
        services.config->ca_file);
    if (!services.store->store_certificate(r.user_id, r.device_id, pem)) {
      call->error = RequestError{ErrorCode::not_found, "the device has no keys to certify"};
      return PA_ERR_NOT_FOUND;
    }
    call->fingerprint = key->fingerprint;
    audit_operation(call, "install_certificate", true, key->fingerprint, std::nullopt);
    log_write(LogLevel::info, fields_of(call),
              fmt::format("installed a certificate for {} ({}), valid until {}", key->fingerprint,
                          info.subject, format_rfc3339(info.not_after)));
    return PA_OK;
  } catch (const keystore::CertificateError& error) {
    call->error = RequestError{ErrorCode::invalid_request, error.what()};
    audit_operation(call, "install_certificate", false, std::nullopt, std::nullopt);
    return PA_ERR_INVALID;
  } catch (const keystore::KeyError& error) {
    call->error = RequestError{ErrorCode::invalid_request, error.what()};
    return PA_ERR_INVALID;
  } catch (const std::exception& error) {
    log_write(LogLevel::error, fields_of(call), fmt::format("key store: {}", error.what()));
    call->error = RequestError{ErrorCode::storage_failed, "cannot store the certificate"};
    return PA_ERR_STORAGE;
  }
}

int host_set_error(pa_host_handle* /*host*/, pa_call* call, const char* code, const char* message) {
  if (!call) return PA_ERR_INVALID;
  call->error = RequestError{parse_error_code(code ? code : "").value_or(ErrorCode::plugin_failed),
                             message ? message : ""};
  return PA_OK;
}

}  // namespace

PluginHost::PluginHost(const HostServices& services,
                       std::map<std::string, std::optional<std::string>> options)
    : handle_(std::make_unique<pa_host_handle>()) {
  handle_->services = &services;
  handle_->options = std::move(options);
  table_ = pa_host{sizeof(pa_host),
                   PA_PLUGIN_ABI_VERSION,
                   handle_.get(),
                   host_log,
                   host_config_get,
                   host_option_get,
                   host_register_action,
                   host_key_exists,
                   host_key_generate,
                   host_key_delete,
                   host_publish_key,
                   host_clear_published_key,
                   host_set_error,
                   host_request_string,
                   host_install_certificate,
                   {}};
}

PluginHost::~PluginHost() = default;

void PluginHost::open_registration(std::function<int(const pa_action*)> register_action) {
  handle_->register_action = std::move(register_action);
  handle_->in_init = true;
}

void PluginHost::close_registration() {
  handle_->in_init = false;
  handle_->register_action = nullptr;
}

int publish_stored_key(pa_call& call) {
  const Request& r = *call.request;
  const HostServices& services = *call.services;
  std::optional<keystore::StoredKey> key = call.stored;
  try {
    if (!key) key = load_key(&call);
  } catch (const std::exception& error) {
    log_write(LogLevel::error, fields_of(&call), fmt::format("key store: {}", error.what()));
    call.error = RequestError{ErrorCode::storage_failed, "cannot read the stored key"};
    audit_operation(&call, "publish", false, std::nullopt, std::nullopt);
    return PA_ERR_STORAGE;
  }
  if (!key) {
    call.error = RequestError{ErrorCode::not_found, "the device has no keys"};
    audit_operation(&call, "publish", false, std::nullopt, std::nullopt);
    return PA_ERR_NOT_FOUND;
  }
  // SPEC 3.2: with PROVISION_CSR a certificate request made with the key itself goes along.
  std::optional<std::string> csr;
  if (services.config->csr && services.config->key_format == KeyFormat::json) {
    try {
      if (std::optional<std::string> private_text =
              services.store->read_private_key(r.user_id, r.device_id)) {
        const keystore::Secret private_pem = keystore::Secret::take(std::move(*private_text));
        csr = keystore::make_csr(private_pem.view(), r.device_id, r.user_id);
      }
    } catch (const std::exception& error) {
      log_write(LogLevel::error, fields_of(&call),
                fmt::format("cannot make the certificate request: {}", error.what()));
      call.error = RequestError{ErrorCode::storage_failed, "cannot make the certificate request"};
      audit_operation(&call, "publish", false, key->fingerprint, std::nullopt);
      return PA_ERR_STORAGE;
    }
  }
  std::string payload;
  try {
    payload = key_message(services, r, *key, csr);
  } catch (const std::exception& error) {
    log_write(LogLevel::error, fields_of(&call),
              fmt::format("cannot sign the key message with the agent key: {}", error.what()));
    call.error = RequestError{ErrorCode::plugin_failed, "cannot attest the key message"};
    audit_operation(&call, "publish", false, key->fingerprint, std::nullopt);
    return PA_ERR_FAILED;
  }
  const auto id = services.publish(keys_topic(*services.config, r.device_id), payload,
                                   services.config->retain_keys);
  audit_operation(&call, "publish", id.has_value(), key->fingerprint, std::nullopt);
  if (!id) {
    call.error = RequestError{ErrorCode::plugin_failed, "the MQTT client refused the key message"};
    return PA_ERR_PUBLISH;
  }
  call.message_ids.push_back(*id);
  call.published_key = true;
  call.fingerprint = key->fingerprint;
  return PA_OK;
}

void prepare_call(pa_call& call, const std::string& effective_key_type) {
  const Request& r = *call.request;
  call.c_request.struct_size = sizeof(pa_request);
  call.c_request.device_id = r.device_id.c_str();
  call.c_request.user_id = r.user_id ? r.user_id->c_str() : nullptr;
  call.c_request.action = r.action.c_str();
  call.c_request.request_id = r.request_id ? r.request_id->c_str() : nullptr;
  call.c_request.json = r.json.c_str();
  call.c_request.encrypted = r.encrypted ? 1 : 0;
  call.c_request.force = r.force ? 1 : 0;
  call.c_request.key_type = effective_key_type.c_str();
}

std::string key_message(const HostServices& services, const Request& request,
                        const keystore::StoredKey& key, const std::optional<std::string>& csr) {
  const Config& config = *services.config;
  if (config.key_format == KeyFormat::pem) return key.public_pem;
  // C++17 has no file_clock::to_sys; shifting by the two clocks' "now" is exact to a few µs.
  const auto created = std::chrono::system_clock::now() +
                       std::chrono::duration_cast<std::chrono::system_clock::duration>(
                           key.created - std::filesystem::file_time_type::clock::now());
  const std::int64_t created_at =
      std::chrono::duration_cast<std::chrono::seconds>(created.time_since_epoch()).count();
  const std::string created_text = format_rfc3339(created_at);
  // SPEC 3.2: who published this key, checkable by a server that pinned the agent key.
  JsonObjectWriter statement;
  statement.field("device_id", request.device_id)
      .optional_field("user_id", request.user_id)
      .field("key_type", keystore::to_string(key.type))
      .field("fingerprint", key.fingerprint)
      .field("created_at", created_text)
      .optional_field("request_id", request.request_id)
      .field("agent_id", services.agent_id);
  JsonObjectWriter json;
  json.field("device_id", request.device_id)
      .optional_field("user_id", request.user_id)
      .field("action", request.action)
      .optional_field("request_id", request.request_id)
      .field("key_type", keystore::to_string(key.type))
      .field("public_key", key.public_pem)
      .field("fingerprint", key.fingerprint)
      .field("created_at", created_text)
      .field("agent_id", services.agent_id);
  if (services.attest) json.field("attestation", services.attest(statement.str()));
  json.optional_field("csr", csr);
  return json.str();
}

ErrorCode error_code_for_status(int status) noexcept {
  switch (status) {
    case PA_ERR_NOT_FOUND:
      return ErrorCode::not_found;
    case PA_ERR_KEYGEN:
      return ErrorCode::keygen_failed;
    case PA_ERR_STORAGE:
      return ErrorCode::storage_failed;
    case PA_ERR_INVALID:
      return ErrorCode::invalid_request;
    case PA_ERR_QUOTA:
      return ErrorCode::quota_exceeded;
    default:
      return ErrorCode::plugin_failed;
  }
}

}  // namespace pa
