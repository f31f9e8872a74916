#include "agent.hpp"

#include <fmt/format.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <system_error>
#include <vector>

#include "json_writer.hpp"
#include "keystore/file_util.hpp"
#include "log.hpp"

namespace pa {
namespace {

keystore::KeyStore open_key_store(const Config& config) {
  try {
    return keystore::KeyStore(config.keys_dir);
  } catch (const keystore::StoreError& error) {
    throw ConfigError(
        fmt::format("invalid PROVISION_KEYS_DIR=\"{}\": {}", config.keys_dir, error.what()));
  }
}

LogFields fields_of(const Outcome& outcome) {
  return LogFields{outcome.device_id,
                   outcome.user_id ? std::string_view(*outcome.user_id) : std::string_view(),
                   outcome.action,
                   outcome.request_id ? std::string_view(*outcome.request_id) : std::string_view(),
                   outcome.error ? "error" : "ok",
                   outcome.error ? to_string(outcome.error->code) : ""};
}

std::string online_message(const Config& config, const std::string& agent_public_key) {
  JsonObjectWriter json;
  json.field("status", "online")
      .field("agent_id", config.mqtt_client_id)
      .field("version", kVersion)
      .field("started_at", format_rfc3339(std::time(nullptr)))
      // SPEC section 4: servers encrypt a device's first request to this key.
      .field("public_key", agent_public_key);
  return json.str();
}

}  // namespace

std::string status_topic(const Config& config) {
  return fmt::format("{}/agents/{}/status", config.provision_topic_base, config.mqtt_client_id);
}

std::string response_message(const Outcome& outcome) {
  JsonObjectWriter json;
  json.optional_field("request_id", outcome.request_id)
      .field("device_id", outcome.device_id)
      .optional_field("user_id", outcome.user_id)
      .field("action", outcome.action)
      .field("status", outcome.error ? "error" : "ok")
      .field("encrypted", outcome.encrypted);
  if (outcome.fingerprint && !outcome.error) json.field("fingerprint", *outcome.fingerprint);
  if (outcome.error) {
    json.begin_object("error")
        .field("code", to_string(outcome.error->code))
        .field("message", outcome.error->message)
        .end_object();
  }
  return json.str();
}

Agent::Agent(Config config) : config_(std::move(config)), store_(open_key_store(config_)) {
  // Registered before the plugins or the session can log anything.
  if (config_.mqtt_password) log_redact(*config_.mqtt_password);
  services_.config = &config_;
  services_.store = &store_;
  services_.agent_id = config_.mqtt_client_id;
  services_.publish = [this](const std::string& topic, const std::string& payload, bool retain) {
    return session_ && session_->publish(topic, payload, retain);
  };
  plugins_ = plugin::PluginSet::load(config_.plugin_dir, host_table(services_));
  if (!plugins_.find(kActionGenerate))
    throw ConfigError(fmt::format(
        "invalid PROVISION_PLUGIN_DIR=\"{}\": no plugin serves {} (is keygen.so installed there?)",
        config_.plugin_dir, kActionGenerate));
  agent_key_ = load_agent_key(config_);
  if (config_.server_pubkey) {
    try {
      server_key_.emplace(keystore::read_file(*config_.server_pubkey));
    } catch (const std::exception& error) {
      throw ConfigError(fmt::format("invalid PROVISION_SERVER_PUBKEY=\"{}\": {}",
                                    *config_.server_pubkey, error.what()));
    }
  }
  try {
    replay_ = std::make_unique<ReplayGuard>(config_.state_dir, config_.max_skew);
  } catch (const std::system_error& error) {
    throw ConfigError(fmt::format("cannot use the state folder {}: {}", config_.state_dir,
                                  error.code().message()));
  }
  session_ = std::make_unique<mqtt::Session>(
      config_, status_topic(config_), online_message(config_, agent_key_.public_pem),
      mqtt::Session::Handlers{[this](InboundMessage&& message) { accept(std::move(message)); },
                              [this] { notifier_.subscribed(service_state()); },
                              [this] {
                                if (notifier_.active()) notifier_.tick(service_state());
                              }});
}

ServiceState Agent::service_state() const {
  return ServiceState{session_->connected(), session_->state_text(), pool_ ? pool_->served() : 0,
                      log_last_error()};
}

Agent::~Agent() = default;

int Agent::run(const std::atomic<bool>& stop) {
  try {
    pool_ = std::make_unique<WorkerPool>(static_cast<std::size_t>(config_.workers),
                                         static_cast<std::size_t>(config_.queue_max));
  } catch (const std::system_error& error) {
    // Not a configuration error (exit 1, so systemd restarts us): the system is short of
    // threads or memory right now.
    throw std::system_error(error.code(),
                            fmt::format("cannot start {} worker thread(s)", config_.workers));
  }
  log_info("provision-agent {} starting: broker {}:{}{}, key store {}, {} worker(s)", kVersion,
           config_.mqtt_host, config_.mqtt_port, config_.mqtt_use_tls ? " (TLS)" : "",
           config_.keys_dir, config_.workers);
  session_->run(stop);

  // SPEC section 8: stop taking requests, finish queued work within 10 s, publish the offline
  // status, disconnect. The loop keeps turning while draining so responses go out (and the
  // watchdog keeps being pinged).
  notifier_.stopping(pool_->waiting());
  log_info("stopping: finishing {} queued request(s)", pool_->waiting());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::atomic<bool> drained{false};
  std::thread drainer([&] {
    const std::size_t abandoned = pool_->stop(deadline);
    if (abandoned > 0) log_warning("abandoned {} queued request(s) at shutdown", abandoned);
    drained = true;
  });
  session_->run(drained);
  drainer.join();
  session_->close(std::chrono::seconds(2));
  log_info("stopped after serving {} request(s)", pool_->served());
  return 0;
}

void Agent::accept(InboundMessage&& message) {
  if (!config_.serves_device(message.device_id)) {
    log_debug("ignoring a request for device {} (not in PROVISION_DEVICES)", message.device_id);
    return;
  }
  const std::string device = message.device_id;
  auto shared = std::make_shared<InboundMessage>(std::move(message));
  if (pool_->submit(device, [this, shared] { handle(*shared); })) return;
  Outcome outcome;
  outcome.device_id = shared->device_id;
  // Network thread: a cheap parse, and only of a payload within the size limit.
  if (shared->payload.size() <= static_cast<std::size_t>(config_.max_payload))
    outcome.request_id = peek_request_id(shared->payload);
  outcome.action = topic_action(shared->kind);
  outcome.error =
      RequestError{ErrorCode::busy,
                   fmt::format("{} requests are already waiting; retry later", config_.queue_max)};
  respond(*shared, outcome);
}

void Agent::handle(const InboundMessage& message) {
  Outcome outcome;
  try {
    outcome = serve(message);
  } catch (const std::exception& error) {
    // No request may take the daemon down (STYLE: per-request errors are values).
    outcome.device_id = message.device_id;
    outcome.error = RequestError{ErrorCode::plugin_failed, "internal error"};
    log_error("request on {} failed: {}", message.topic, error.what());
  }
  respond(message, outcome);
}

std::variant<std::string, RequestError> Agent::decrypt(const Envelope& envelope,
                                                       const std::string& device_id) {
  // SPEC section 4: the server's signature first, so an unsigned envelope costs no decryption.
  if (server_key_ && !server_key_->verify(envelope))
    return RequestError{ErrorCode::unauthorized,
                        envelope.signature
                            ? "the signature does not verify with PROVISION_SERVER_PUBKEY"
                            : "PROVISION_SERVER_PUBKEY is set: requests must carry the server's "
                              "signature"};

  // The device's keys (user folders, then legacy), then the agent key; the first whose tag
  // verifies wins. Keys are read for each attempt and wiped: nothing secret is cached.
  std::vector<std::filesystem::path> candidates = store_.private_key_candidates(device_id);
  candidates.emplace_back(agent_key_.path);
  std::string reason = "no key to try";
  for (const auto& path : candidates) {
    std::string pem;
    try {
      pem = keystore::read_file(path);
    } catch (const std::system_error& error) {
      log_warning("cannot read {} to decrypt a request for {}: {}", path.string(), device_id,
                  error.code().message());
      continue;
    }
    std::string why;
    auto plaintext = e2ee::open_envelope(envelope, pem, &why);
    e2ee::wipe(pem);
    if (plaintext) {
      log_debug("request for {} decrypted with {}", device_id, path.string());
      return std::string(reinterpret_cast<const char*>(plaintext->data()), plaintext->size());
    }
    log_debug("{} does not decrypt the request for {}: {}", path.string(), device_id, why);
    // A tag that fails under a key that unwrapped the session key says more than the others.
    if (reason != "tag does not verify") reason = why;
  }
  return RequestError{
      ErrorCode::decrypt_failed,
      fmt::format("neither the device's keys nor the agent key decrypt this envelope ({})",
                  reason)};
}

void Agent::report_replay(const Request& request, const ReplayRefusal& refusal) {
  // As the original agent did: P/status/D/replay_blocked, QoS 1, not retained (SPEC section 3).
  JsonObjectWriter json;
  json.field("device_id", request.device_id)
      .field("reason", refusal.reason)
      .field("action", request.action)
      .optional_field("request_id", request.request_id)
      .optional_field("nonce", request.nonce);
  if (request.ts) json.field("ts", *request.ts);
  json.field("agent_id", config_.mqtt_client_id)
      .field("detected_at", format_rfc3339(std::time(nullptr)));
  session_->publish(
      fmt::format("{}/status/{}/replay_blocked", config_.provision_topic_base, request.device_id),
      json.str(), false);
}

Outcome Agent::serve(const InboundMessage& message) {
  Decoded decoded = decode_request(message, static_cast<std::size_t>(config_.max_payload),
                                   [this](const Envelope& envelope, const std::string& device) {
                                     return decrypt(envelope, device);
                                   });
  Outcome outcome;
  outcome.device_id = message.device_id;
  outcome.request_id = decoded.request_id;
  outcome.user_id = decoded.user_id;
  outcome.action = decoded.action;
  outcome.encrypted = decoded.encrypted;
  // Decrypted content is wiped once served (the decoder wipes its own copy).
  struct WipeJson {
    Decoded& decoded;
    ~WipeJson() {
      if (decoded.request && decoded.request->encrypted) e2ee::wipe(decoded.request->json);
    }
  } wipe_json{decoded};
  // SPEC section 4: with a server key every request is a signed envelope; plaintext is refused
  // before anything else reads it (checks of the topic's device id and size excepted).
  if (server_key_ && !decoded.encrypted &&
      !(decoded.error && (decoded.error->code == ErrorCode::invalid_device_id ||
                          decoded.error->code == ErrorCode::payload_too_large))) {
    outcome.error = RequestError{
        ErrorCode::unauthorized,
        "PROVISION_SERVER_PUBKEY is set: requests must be envelopes signed by the server"};
    return outcome;
  }
  if (decoded.error) {
    outcome.error = decoded.error;
    return outcome;
  }
  const Request& request = *decoded.request;

  const plugin::Plugin* plugin = plugins_.find(request.action);
  if (!plugin) {
    outcome.error = RequestError{ErrorCode::unknown_action,
                                 fmt::format("no plugin serves the action \"{}\"", request.action)};
    return outcome;
  }

  // SPEC section 4: what plaintext may do.
  if (!request.encrypted && config_.e2ee_policy == E2eePolicy::all) {
    outcome.error = RequestError{ErrorCode::e2ee_required,
                                 "PROVISION_E2EE_POLICY=all: requests must be encrypted"};
    return outcome;
  }
  if (!request.encrypted && config_.e2ee_policy == E2eePolicy::destructive &&
      (request.action == kActionUpdate || request.action == kActionDelete) &&
      !store_.private_key_candidates(request.device_id).empty()) {
    outcome.error = RequestError{
        ErrorCode::e2ee_required,
        fmt::format("PROVISION_E2EE_POLICY=destructive: {} of existing keys must be encrypted",
                    request.action)};
    return outcome;
  }

  // SPEC section 3.1: a replay is refused only once everything else would let it through, so a
  // refused request does not use up its id.
  if (auto refusal = replay_->admit(request, static_cast<std::int64_t>(std::time(nullptr)))) {
    report_replay(request, *refusal);
    outcome.error = RequestError{ErrorCode::replay, refusal->message};
    return outcome;
  }

  pa_call call;
  call.services = &services_;
  call.request = &request;
  const std::string key_type =
      request.key_type.value_or(std::string(keystore::to_string(config_.key_type)));
  prepare_call(call, key_type);
  const int status = plugin->descriptor->handle(plugin->state, &call, &call.c_request);
  if (status != PA_OK) {
    outcome.error = call.error.value_or(
        RequestError{error_code_for_status(status),
                     fmt::format("plugin {} failed with status {}", plugin->name, status)});
    return outcome;
  }
  outcome.fingerprint = call.fingerprint;
  return outcome;
}

void Agent::respond(const InboundMessage& message, const Outcome& outcome) {
  const std::string payload = response_message(outcome);
  session_->publish(fmt::format("{}/{}/response", config_.provision_topic_base, message.device_id),
                    payload, false);
  if (message.response_topic) {
    const mqtt::ReplyTo reply{*message.response_topic, message.correlation_data};
    session_->publish(*message.response_topic, payload, false, &reply);
  }
  if (outcome.error)
    log_at(LogLevel::warning, fields_of(outcome), "{} refused: {}", outcome.action,
           outcome.error->message);
  else
    log_at(LogLevel::info, fields_of(outcome), "{} served{}", outcome.action,
           outcome.fingerprint ? fmt::format(" ({})", *outcome.fingerprint) : "");
}

}  // namespace pa
