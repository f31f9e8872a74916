#include "agent.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <vector>

#include "audit/jws.hpp"
#include "base/json_writer.hpp"
#include "base/log.hpp"
#include "base/text.hpp"
#include "base/time.hpp"
#include "keystore/errors.hpp"
#include "keystore/file_util.hpp"
#include "keystore/permissions.hpp"

namespace pa {
namespace {

namespace fs = std::filesystem;

keystore::KeyStore open_key_store(const Config& config) {
  try {
    return keystore::KeyStore(
        config.keys_dir,
        keystore::StoreOptions{config.key_group, static_cast<std::size_t>(config.max_devices)});
  } catch (const keystore::GroupError& error) {
    throw ConfigError(fmt::format("invalid PROVISION_KEY_GROUP=\"{}\": {}",
                                  config.key_group.value_or(""), error.what()));
  } catch (const keystore::StoreError& error) {
    throw ConfigError(
        fmt::format("invalid PROVISION_KEYS_DIR=\"{}\": {}", config.keys_dir, error.what()));
  }
}

// The state folder (SPEC section 5): made 0700 when missing, then held to the key store root's
// rules; never the key store itself or inside it.
void open_state_folder(const Config& config, std::optional<gid_t> key_group) {
  const fs::path state = fs::path(config.state_dir).lexically_normal();
  const fs::path keys = fs::path(config.keys_dir).lexically_normal();
  const auto [keys_end, state_end] =
      std::mismatch(keys.begin(), keys.end(), state.begin(), state.end());
  if (keys_end == keys.end())
    throw ConfigError(
        fmt::format("the state folder {} is the key store {} or inside it; set STATE_DIRECTORY (or "
                    "PROVISION_KEYS_DIR) so that they are apart",
                    config.state_dir, config.keys_dir));
  try {
    keystore::create_private_dirs(state, 0700);
  } catch (const std::system_error& error) {
    throw ConfigError(fmt::format("cannot create the state folder {}: {}", config.state_dir,
                                  error.code().message()));
  }
  try {
    keystore::require_private_folder(state, key_group, "state folder ");
  } catch (const keystore::StoreError& error) {
    throw ConfigError(error.what());
  }
}

constexpr std::size_t kMaxCorrelationData = 256;  // SPEC 3.5: larger is not echoed

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::int64_t now_ms() {
  return now_us() / 1000;
}

// A recorded response answered again to a retry: the same JSON object plus "duplicate": true.
std::string with_duplicate_flag(const std::string& response) {
  if (response.empty() || response.back() != '}') return response;
  return response.substr(0, response.size() - 1) + ",\"duplicate\":true}";
}

LogFields fields_of(const Outcome& outcome) {
  return LogFields{outcome.device_id,
                   outcome.user_id ? std::string_view(*outcome.user_id) : std::string_view(),
                   outcome.action,
                   outcome.request_id ? std::string_view(*outcome.request_id) : std::string_view(),
                   outcome.error ? "error" : "ok",
                   outcome.error ? to_string(outcome.error->code) : ""};
}

std::string online_message(const Config& config, const std::string& agent_public_key,
                           std::int64_t started_at, const mqtt::SessionFacts& session) {
  JsonObjectWriter json;
  json.field("status", "online")
      .field("agent_id", config.mqtt_client_id)
      .field("version", kVersion)
      .field("started_at", format_rfc3339(started_at))
      // SPEC section 4: servers encrypt a device's first request to this key.
      .field("public_key", agent_public_key)
      // SPEC 3.6: where the agent is, and whether the broker kept what was queued for it.
      .field("broker", session.broker)
      .field("session", session.resumed ? "resumed" : "new")
      .field("session_since", format_rfc3339(session.session_since))
      .field("instance", session.instance);
  if (session.client_id_conflict) json.field("client_id_conflict", true);
  return json.str();
}

// The audit checkpoint of SPEC section 5, signed with the agent key (read for this signature
// only, then wiped).
std::string signed_checkpoint(const audit::Head& head, const AgentKey& agent_key,
                              std::optional<gid_t> key_group) {
  const keystore::Secret pem =
      keystore::Secret::take(keystore::read_private_file(agent_key.path, key_group, "agent key "));
  const std::string signature = audit::jws_rs256(audit::checkpoint_payload(head), pem.view(),
                                                 keystore::fingerprint(agent_key.public_pem));
  return audit::checkpoint_message(head, signature);
}

// The retained status with the counters of SPEC section 8 added.
std::string with_metrics(const std::string& status, const std::string& metrics_json) {
  if (status.empty() || status.back() != '}') return status;
  return status.substr(0, status.size() - 1) + ",\"metrics\":" + metrics_json + "}";
}

}  // namespace

std::string status_topic(const Config& config) {
  return topics::agent_status(config.provision_topic_base, config.mqtt_client_id);
}

bool is_acceptable_response_topic(const std::string& topic, const std::string& provision_base) {
  const std::string prefix = provision_base + "/";
  if (topic.size() <= prefix.size() || topic.compare(0, prefix.size(), prefix) != 0) return false;
  if (topic.find_first_of("+#") != std::string::npos) return false;
  if (topic.find('\0') != std::string::npos) return false;
  // The agents' own status and audit topics are not answers.
  if (topic.compare(prefix.size(), 7, "agents/") == 0) return false;
  const std::string_view last = std::string_view(topic).substr(topic.rfind('/') + 1);
  return !last.empty() && last != "request" && last != "update" && last != "delete";
}

std::string response_message(const Outcome& outcome) {
  // Identifiers from the wire are echoed as valid UTF-8 whatever arrived (SPEC 3.5).
  auto text = [](const std::optional<std::string>& value) -> std::optional<std::string> {
    if (!value) return std::nullopt;
    return valid_utf8(*value);
  };
  JsonObjectWriter json;
  json.optional_field("request_id", text(outcome.request_id))
      .field("device_id", valid_utf8(outcome.device_id))
      .optional_field("user_id", text(outcome.user_id))
      .field("action", valid_utf8(outcome.action))
      .field("status", outcome.error ? "error" : "ok")
      .field("encrypted", outcome.encrypted);
  if (outcome.fingerprint && !outcome.error) json.field("fingerprint", *outcome.fingerprint);
  if (outcome.error) {
    json.begin_object("error")
        .field("code", to_string(outcome.error->code))
        .field("message", valid_utf8(outcome.error->message))
        .end_object();
  }
  return json.str();
}

Agent::Agent(Config config)
    : config_(std::move(config)), store_(open_key_store(config_)), acks_([this](std::uint64_t seq) {
        if (spool_) spool_->finish(seq);
      }) {
  // Registered before the plugins or the session can log anything.
  if (config_.mqtt_password) log_redact(*config_.mqtt_password);
  // One agent at a time on a key store and on a state folder (SPEC section 5): a second one
  // exits 1 naming the first one's PID, before it touches anything.
  store_lock_.emplace(store_.lock_instance());
  open_state_folder(config_, store_.key_group());
  if (fs::path(config_.state_dir).lexically_normal() !=
      fs::path(config_.keys_dir).lexically_normal())
    state_lock_.emplace(fs::path(config_.state_dir));
  services_.config = &config_;
  services_.store = &store_;
  services_.agent_id = config_.mqtt_client_id;
  services_.publish = [this](const std::string& topic, const std::string& payload,
                             bool retain) -> std::optional<int> {
    if (!session_) return std::nullopt;
    return session_->publish(topic, payload, retain);
  };
  services_.begin_change = [this](std::uint64_t seq, const ChangeIntent& intent) {
    return !spool_ || spool_->begin_change(seq, intent);
  };
  // SPEC 3.2: key messages are signed with the agent key, read for each signature and wiped.
  services_.attest = [this](std::string_view statement) {
    const keystore::Secret pem = keystore::Secret::take(
        keystore::read_private_file(agent_key_.path, store_.key_group(), "agent key "));
    return audit::jws_rs256(statement, pem.view(), keystore::fingerprint(agent_key_.public_pem));
  };
  // Seals a torn last entry now, before anything is served; never fatal.
  audit_ = std::make_unique<audit::AuditLog>(config_.state_dir);
  services_.audit = audit_.get();
  plugins_ = plugin::PluginSet::load(config_, services_);
  if (!plugins_.find(kActionGenerate))
    throw ConfigError(fmt::format(
        "invalid PROVISION_PLUGIN_DIR=\"{}\": no plugin serves {} (is keygen.so installed there?)",
        config_.plugin_dir, kActionGenerate));
  agent_key_ = load_agent_key(config_, store_.key_group());
  if (config_.server_pubkey) {
    try {
      server_key_.emplace(keystore::read_file(*config_.server_pubkey));
    } catch (const std::exception& error) {
      throw ConfigError(fmt::format("invalid PROVISION_SERVER_PUBKEY=\"{}\": {}",
                                    *config_.server_pubkey, error.what()));
    }
  }
  try {
    ledger_ = std::make_unique<RequestLedger>(config_.state_dir, config_.max_skew);
    // Waiting requests are bounded by PROVISION_QUEUE_MAX; the spool also holds those running.
    spool_ = std::make_unique<IntakeSpool>(
        config_.state_dir, static_cast<std::size_t>(config_.queue_max + config_.workers));
    // Undocumented, for bench/ only: what durability costs is measured against an agent that
    // writes no spool (and so loses what it holds in a crash).
    if (const char* unspooled = std::getenv("PA_BENCH_UNSPOOLED");
        unspooled != nullptr && std::string_view(unspooled) == "1") {
      spool_->disable_writes_for_bench();
      log_warning(
          "PA_BENCH_UNSPOOLED=1: the intake spool writes nothing, so a crash loses the requests "
          "in hand (for benchmarks only)");
    }
  } catch (const std::system_error& error) {
    throw ConfigError(
        fmt::format("cannot use the state folder {}: {}", config_.state_dir, error.what()));
  }
  // SPEC section 8: what the metrics file and the retained status show, sampled from its owners.
  metrics_ = std::make_unique<AgentMetrics>(
      config_.mqtt_client_id, config_.metrics_file,
      AgentMetrics::Sources{
          [this] { return pool_ ? pool_->waiting() : 0; }, [this] { return spool_->pending(); },
          [this] { return session_ && session_->connected(); },
          [this] { return session_ ? session_->counters() : mqtt::Session::Counters{}; },
          [this] { return store_.pairs_by_type(); },
          [this] { return rotation_ ? rotation_->due() : 0; },
          [this] { return audit_->head().seq; },
          [this] { return key_pool_ ? key_pool_->state() : KeyPoolState{}; },
          [this] { return store_.index_rescans(); }},
      test_override_seconds("PA_STATUS_INTERVAL_SECONDS", std::chrono::seconds(60)));
  services_.key_generated = [this](keystore::KeyType type, std::chrono::duration<double> took) {
    metrics_->key_generated(type, took, "request");
  };
  // SPEC 3.4: pairs of the default type generated ahead, at idle priority, in locked memory.
  key_pool_ = std::make_unique<KeyPool>(
      KeyPoolOptions{config_.key_type,
                     static_cast<std::size_t>(config_.key_pool),
                     [this](keystore::KeyType type, std::chrono::duration<double> took) {
                       metrics_->key_generated(type, took, "pool");
                     },
                     {}});
  services_.key_pool = key_pool_.get();
  session_ = std::make_unique<mqtt::Session>(
      config_, config_.brokers, status_topic(config_),
      // Event loop thread, as on_tick. The counters go with every status the session publishes,
      // so that the refresh in on_tick comes a status interval later, not as a second message
      // right after this one.
      [this, started_at =
                 static_cast<std::int64_t>(std::time(nullptr))](const mqtt::SessionFacts& session) {
        online_status_ = online_message(config_, agent_key_.public_pem, started_at, session);
        return with_metrics(online_status_,
                            metrics_->status_now(std::chrono::steady_clock::now(), announcements_));
      },
      mqtt::Session::Handlers{[this](InboundMessage&& message) { accept(std::move(message)); },
                              [this](int mid) { acks_.acknowledged(mid); },
                              [this] {
                                ++announcements_;
                                notifier_.subscribed(service_state());
                              },
                              [this] {
                                if (notifier_.active()) notifier_.tick(service_state());
                                audit_->tick();  // the hourly checkpoint
                                // SPEC 8: the counters in the retained status, at most once a
                                // minute.
                                if (announcements_ > 0 && session_->connected())
                                  if (auto counters = metrics_->status_due(
                                          std::chrono::steady_clock::now(), announcements_))
                                    session_->publish(status_topic(config_),
                                                      with_metrics(online_status_, *counters),
                                                      true);
                              }});
  audit_->set_checkpoint_sink([this](const audit::Head& head) {
    try {
      return session_
          ->publish(topics::agent_audit(config_.provision_topic_base, config_.mqtt_client_id),
                    signed_checkpoint(head, agent_key_, store_.key_group()), true)
          .has_value();
    } catch (const std::exception& error) {
      log_error("cannot publish the audit checkpoint of seq {}: {}", head.seq, error.what());
      return false;
    }
  });
}

ServiceState Agent::service_state() const {
  return ServiceState{session_->connected(), session_->state_text(), pool_ ? pool_->served() : 0,
                      log_last_error(), session_->problem_text()};
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
  std::vector<std::string> brokers;
  for (const mqtt::BrokerAddress& broker : config_.brokers)
    brokers.push_back(mqtt::to_string(broker) + (broker.tls ? " (TLS)" : ""));
  log_info("provision-agent {} starting: broker {}, key store {}, state {}, {} worker(s)", kVersion,
           fmt::join(brokers, ", "), config_.keys_dir, config_.state_dir, config_.workers);

  // SPEC 3.4: what the last run left unanswered is queued first, in arrival order, so it is
  // served before anything newer for the same device. All of it: the spool bounded it already,
  // and it may hold the requests that were running besides those waiting.
  for (SpooledRequest& recovered : spool_->take_recovered()) {
    auto shared = std::make_shared<SpooledRequest>(std::move(recovered));
    const std::string device = shared->message.device_id;
    if (!pool_->submit(
            device, [this, shared] { handle(shared->message, shared->intent); }, true))
      log_warning("cannot queue spooled request {} now; it stays in the spool",
                  shared->message.seq);
  }
  rotation_ = std::make_unique<RotationWatcher>(
      config_, [this](const std::string& topic, const std::string& payload) {
        session_->publish(topic, payload, false);
      });
  metrics_->start_writing();
  session_->run(stop);
  metrics_->stop_writing();
  rotation_.reset();
  // Nothing new is generated from here on (a generation in progress ends at its next draw of
  // random bytes, meanwhile the drain runs); what the pool holds is wiped when the agent goes.
  key_pool_->cancel();

  // SPEC section 8: stop taking requests, finish queued work within 10 s, publish the offline
  // status, disconnect. What is not finished stays in the intake spool for the next start. The
  // loop keeps turning while draining so responses go out (and the watchdog keeps being pinged).
  notifier_.stopping(pool_->waiting());
  log_info("stopping: finishing {} queued request(s)", pool_->waiting());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::atomic<bool> drained{false};
  std::thread drainer([&] {
    const std::size_t abandoned = pool_->stop(deadline);
    if (abandoned > 0)
      log_warning("left {} queued request(s) in the intake spool for the next start", abandoned);
    drained = true;
  });
  session_->run(drained);
  drainer.join();
  session_->close(std::chrono::seconds(2));
  log_info("stopped after serving {} request(s)", pool_->served());
  return 0;
}

void Agent::answer_now(const InboundMessage& message, ErrorCode code, std::string text) {
  Reply reply;
  Outcome& outcome = reply.outcome;
  outcome.device_id = message.device_id;
  // Network thread: a cheap parse, and only of a payload within the size limit.
  outcome.request_id =
      peek_request_id(message.payload, static_cast<std::size_t>(config_.max_payload));
  outcome.action = topic_action(message.kind);
  outcome.error = RequestError{code, std::move(text)};
  reply.payload = response_message(outcome);
  std::vector<int> ignored;
  respond(message, reply, ignored);
}

void Agent::accept(InboundMessage&& message) {
  if (!config_.serves_device(message.device_id)) {
    log_debug("ignoring a request for device {} (not in PROVISION_DEVICES)",
              escape_controls(message.device_id));
    return;
  }
  // SPEC 3.5: an MQTT 5 Response Topic is honoured only where an answer belongs.
  if (message.response_topic) {
    if (!is_acceptable_response_topic(*message.response_topic, config_.provision_topic_base)) {
      log_warning(
          "not answering on the Response Topic \"{}\" of a request for {}: only topics "
          "under {}/ that are not requests are",
          escape_controls(valid_utf8(*message.response_topic)), escape_controls(message.device_id),
          config_.provision_topic_base);
      message.response_topic.reset();
      message.correlation_data.clear();
    } else if (message.correlation_data.size() > kMaxCorrelationData) {
      log_warning(
          "not answering on the Response Topic of a request for {}: its correlation data "
          "is {} bytes (at most {} are echoed)",
          escape_controls(message.device_id), message.correlation_data.size(), kMaxCorrelationData);
      message.response_topic.reset();
      message.correlation_data.clear();
    }
  }
  if (message.payload_bytes > static_cast<std::size_t>(config_.max_payload)) {
    // Answered as it arrives, never copied, queued or spooled (SPEC 3.5).
    answer_now(message, ErrorCode::payload_too_large,
               fmt::format("payload of {} bytes exceeds the limit of {} bytes",
                           message.payload_bytes, config_.max_payload));
    return;
  }
  // SPEC section 2: beyond PROVISION_QUEUE_MAX waiting requests, busy. Asked before the spool
  // takes the request, so that everything spooled is also queued: the spool's own bound counts
  // running requests too, and one device's backlog can leave workers idle.
  if (!pool_->has_room()) {
    answer_now(message, ErrorCode::busy,
               fmt::format("{} requests are already waiting; retry later", config_.queue_max));
    return;
  }
  std::string failure;
  switch (spool_->append(message, &failure)) {
    case IntakeSpool::Admission::full:
      answer_now(message, ErrorCode::busy,
                 fmt::format("{} requests are already waiting; retry later", config_.queue_max));
      return;
    case IntakeSpool::Admission::failed:
      log_error("{}", failure);
      answer_now(message, ErrorCode::storage_failed,
                 "the agent cannot record the request durably (its state folder is full or "
                 "read-only); retry later");
      return;
    case IntakeSpool::Admission::spooled:
      break;
  }
  const std::string device = message.device_id;
  auto shared = std::make_shared<InboundMessage>(std::move(message));
  if (!pool_->submit(device, [this, shared] { handle(*shared, std::nullopt); }))
    log_info("request {} for {} stays in the intake spool: the agent is stopping", shared->seq,
             escape_controls(device));
}

void Agent::handle(const InboundMessage& message, const std::optional<ChangeIntent>& redo) {
  std::vector<int> message_ids;
  Reply reply;
  try {
    reply = serve(message, redo, message_ids);
  } catch (const std::exception& error) {
    // No request may take the daemon down (STYLE: per-request errors are values).
    reply = Reply{};
    reply.outcome.device_id = message.device_id;
    reply.outcome.action = topic_action(message.kind);
    reply.outcome.error = RequestError{ErrorCode::plugin_failed, "internal error"};
    reply.payload = response_message(reply.outcome);
    log_error("request on {} failed: {}", escape_controls(message.topic), error.what());
  }
  if (!reply.silent) respond(message, reply, message_ids);
  // The spool entry is done once the broker acknowledged every message answering it.
  acks_.expect(message.seq, message_ids);
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
  // verifies wins. Keys are read for each attempt (through folder descriptors, never following a
  // link) and wiped: nothing secret is cached.
  std::string reason = "no key to try";
  auto attempt = [&](const std::string& source, std::string& pem) -> std::optional<std::string> {
    std::string why;
    auto plaintext = e2ee::open_envelope(envelope, pem, &why);
    keystore::Secret::wipe(pem);
    if (plaintext) {
      log_debug("request for {} decrypted with {}", device_id, source);
      return std::string(reinterpret_cast<const char*>(plaintext->data()), plaintext->size());
    }
    log_debug("{} does not decrypt the request for {}: {}", source, device_id, why);
    // A tag that fails under a key that unwrapped the session key says more than the others.
    if (reason != "tag does not verify") reason = why;
    return std::nullopt;
  };
  std::vector<keystore::DeviceFolder> folders;
  try {
    folders = store_.private_key_folders(device_id);
  } catch (const keystore::StoreError& error) {
    log_warning("cannot list the keys of {} to decrypt a request: {}", device_id, error.what());
  }
  for (const keystore::DeviceFolder& folder : folders) {
    std::optional<std::string> pem;
    try {
      pem = store_.read_private_key(folder.user, folder.device);
    } catch (const keystore::StoreError& error) {
      log_warning("cannot read {} to decrypt a request for {}: {}", folder.dir.string(), device_id,
                  error.what());
      continue;
    }
    if (!pem) continue;
    if (auto plaintext = attempt((folder.dir / keystore::kPrivateKeyFile).string(), *pem))
      return std::move(*plaintext);
  }
  try {
    std::string pem =
        keystore::read_private_file(agent_key_.path, store_.key_group(), "agent key ");
    if (auto plaintext = attempt("the agent key", pem)) return std::move(*plaintext);
  } catch (const keystore::StoreError& error) {
    log_warning("cannot read the agent key to decrypt a request for {}: {}", device_id,
                error.what());
  }
  return RequestError{
      ErrorCode::decrypt_failed,
      fmt::format("neither the device's keys nor the agent key decrypt this envelope ({})",
                  reason)};
}

void Agent::report_replay(const Request& request, const std::string& reason) {
  // As the original agent did: P/status/D/replay_blocked, QoS 1, not retained (SPEC section 3).
  JsonObjectWriter json;
  json.field("device_id", request.device_id)
      .field("reason", reason)
      .field("action", request.action)
      .optional_field("request_id", request.request_id)
      .optional_field("nonce", request.nonce);
  if (request.ts) json.field("ts", *request.ts);
  json.field("agent_id", config_.mqtt_client_id)
      .field("detected_at", format_rfc3339(std::time(nullptr)));
  session_->publish(topics::replay_blocked(config_.provision_topic_base, request.device_id),
                    json.str(), false);
}

bool Agent::is_destructive(const Request& request) const {
  const plugin::ActionSpec* action = plugins_.action(request.action);
  return action && action->destructive(request.force);
}

Agent::Reply Agent::serve(const InboundMessage& message, const std::optional<ChangeIntent>& redo,
                          std::vector<int>& message_ids) {
  Reply reply;
  Outcome& outcome = reply.outcome;
  outcome.device_id = message.device_id;
  outcome.action = topic_action(message.kind);
  auto finish = [&]() -> Reply& {
    reply.payload = response_message(outcome);
    return reply;
  };

  // SPEC 3.4: a request whose MQTT 5 Message Expiry passed while it waited is not run.
  if (message.expires_at_ms != 0 && now_ms() > message.expires_at_ms) {
    outcome.request_id =
        peek_request_id(message.payload, static_cast<std::size_t>(config_.max_payload));
    outcome.error = RequestError{ErrorCode::expired,
                                 "the request's message expiry passed before it could be served"};
    return finish();
  }

  Decoded decoded = decode_request(
      message, static_cast<std::size_t>(config_.max_payload),
      [this](const Envelope& envelope, const std::string& device) {
        return decrypt(envelope, device);
      },
      [this](std::string_view name) { return plugins_.canonical(name); });
  outcome.request_id = decoded.request_id;
  outcome.user_id = decoded.user_id;
  outcome.action = decoded.action;
  outcome.encrypted = decoded.encrypted;
  // SPEC section 4: with a server key every request is a signed envelope; plaintext is refused
  // before anything else reads it (checks of the topic's device id and size excepted).
  if (server_key_ && !decoded.encrypted &&
      !(decoded.error && (decoded.error->code == ErrorCode::invalid_device_id ||
                          decoded.error->code == ErrorCode::payload_too_large))) {
    outcome.error = RequestError{
        ErrorCode::unauthorized,
        "PROVISION_SERVER_PUBKEY is set: requests must be envelopes signed by the server"};
    return finish();
  }
  if (decoded.error) {
    outcome.error = decoded.error;
    return finish();
  }
  const Request& request = *decoded.request;

  // SPEC section 4: a signature binds the request to its device, action, id and time, so it can
  // never be moved to another device or topic, or replayed after its ts left the window.
  if (server_key_ &&
      (!request.names_device || !request.names_action || !request.request_id || !request.ts)) {
    outcome.error = RequestError{
        ErrorCode::unauthorized,
        "a signed request must name device_id, action, request_id and ts in its plaintext"};
    return finish();
  }

  const plugin::Plugin* plugin = plugins_.find(request.action);
  if (!plugin) {
    outcome.error = RequestError{
        ErrorCode::unknown_action,
        fmt::format("no plugin serves the action \"{}\"", escape_controls(request.action))};
    return finish();
  }

  // SPEC section 4: what plaintext may do.
  const bool destructive = is_destructive(request);
  if (!request.encrypted && config_.e2ee_policy == E2eePolicy::all) {
    outcome.error = RequestError{ErrorCode::e2ee_required,
                                 "PROVISION_E2EE_POLICY=all: requests must be encrypted"};
    return finish();
  }
  if (!request.encrypted && config_.e2ee_policy == E2eePolicy::destructive && destructive &&
      !store_.private_key_candidates(request.device_id).empty()) {
    outcome.error = RequestError{
        ErrorCode::e2ee_required,
        fmt::format("PROVISION_E2EE_POLICY=destructive: {}{} of existing keys must be encrypted",
                    request.force ? "a forced " : "", request.action)};
    return finish();
  }

  // SPEC 3.1 and 3.4: replays are refused and retries answered from the record, once
  // everything else would let the request through (a refused request uses up nothing).
  const SpoolPosition at{spool_->epoch(), message.seq};
  const LedgerVerdict verdict = ledger_->check(request, at, destructive, now_us());
  pa_call call;
  call.services = &services_;
  call.request = &request;
  call.seq = message.seq;
  call.redo = redo;
  switch (verdict.kind) {
    case LedgerVerdict::Kind::replay:
      report_replay(request, verdict.reason);
      outcome.error = RequestError{ErrorCode::replay, verdict.message};
      return finish();
    case LedgerVerdict::Kind::in_flight:
      log_at(LogLevel::info, fields_of(outcome),
             "{} is a retry of a request that was still being served: answered once",
             outcome.action);
      reply.silent = true;
      return finish();
    case LedgerVerdict::Kind::same_message:
    case LedgerVerdict::Kind::duplicate: {
      reply.duplicate = verdict.kind == LedgerVerdict::Kind::duplicate;
      reply.payload = reply.duplicate ? with_duplicate_flag(verdict.response) : verdict.response;
      // The key the record speaks of is published again: the first copy may be what was lost.
      if (verdict.published_key) {
        prepare_call(call,
                     request.key_type.value_or(std::string(keystore::to_string(config_.key_type))));
        publish_stored_key(call);
        message_ids.insert(message_ids.end(), call.message_ids.begin(), call.message_ids.end());
      }
      outcome.fingerprint = call.fingerprint;
      return reply;
    }
    case LedgerVerdict::Kind::fresh:
      break;
  }

  const std::string key_type =
      request.key_type.value_or(std::string(keystore::to_string(config_.key_type)));
  prepare_call(call, key_type);
  const int status = plugin->descriptor->handle(plugin->state, &call, &call.c_request);
  message_ids.insert(message_ids.end(), call.message_ids.begin(), call.message_ids.end());
  if (status != PA_OK) {
    outcome.error = call.error.value_or(
        RequestError{error_code_for_status(status),
                     fmt::format("plugin {} failed with status {}", plugin->name, status)});
    return finish();
  }
  outcome.fingerprint = call.fingerprint;
  finish();
  ledger_->record(request, at, spool_->last_seq(), reply.payload, call.published_key, destructive,
                  now_us());
  return reply;
}

void Agent::respond(const InboundMessage& message, const Reply& reply,
                    std::vector<int>& message_ids) {
  const Outcome& outcome = reply.outcome;
  const std::string topic = topics::response(config_.provision_topic_base, message.device_id);
  // SPEC 3.6: with MQTT 5 the response carries the request's request_id and traceparent as user
  // properties, so a broker-side tracer can follow a request without parsing payloads.
  mqtt::UserProperties properties;
  if (outcome.request_id) properties.emplace_back("request_id", valid_utf8(*outcome.request_id));
  if (!message.traceparent.empty()) properties.emplace_back("traceparent", message.traceparent);
  if (auto id = session_->publish(topic, reply.payload, false, nullptr, &properties))
    message_ids.push_back(*id);
  if (message.response_topic) {
    const mqtt::ReplyTo reply_to{*message.response_topic, message.correlation_data};
    if (auto id = session_->publish(*message.response_topic, reply.payload, false, &reply_to,
                                    &properties))
      message_ids.push_back(*id);
  }
  // Action names no plugin serves are counted as "other": clients cannot grow the label set.
  metrics_->request_done(
      plugins_.action(outcome.action) ? std::string_view(outcome.action) : "other",
      reply.duplicate ? "duplicate"
      : outcome.error ? to_string(outcome.error->code)
                      : "ok");
  LogFields fields = fields_of(outcome);
  fields.traceparent = message.traceparent;
  const char* retry = reply.duplicate ? " (a retry, answered as recorded)" : "";
  if (outcome.error)
    log_at(LogLevel::warning, fields, "{} refused: {}", outcome.action,
           escape_controls(outcome.error->message));
  else
    log_at(LogLevel::info, fields, "{} served{}{}", outcome.action,
           outcome.fingerprint ? fmt::format(" ({})", *outcome.fingerprint) : "", retry);
}

}  // namespace pa
