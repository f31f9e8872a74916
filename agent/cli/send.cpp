#include "cli/send.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <rapidjson/document.h>
#include <unistd.h>

#include <cryptopp/osrng.h>

#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <set>
#include <system_error>

#include "base/json_writer.hpp"
#include "base/log.hpp"
#include "cli/command.hpp"
#include "intake/envelope.hpp"
#include "intake/request.hpp"
#include "keystore/file_util.hpp"
#include "keystore/identifier.hpp"
#include "mqtt/client.hpp"
#include "protocol/protocol.hpp"

namespace pa {
namespace {

using Clock = std::chrono::steady_clock;

// A batch's progress on a terminal: devices done, failed, rate, redrawn in place at most four
// times a second and erased before the results. Nothing when `out` is not a terminal, so scripts
// read the results alone.
class Progress {
 public:
  Progress(std::FILE* out, std::size_t total)
      : out_(out), total_(total), shown_(total > 1 && ::isatty(::fileno(out)) == 1) {}
  void update(std::size_t done, std::size_t failed) {
    const auto now = Clock::now();
    if (!shown_ || (now - drawn_ < std::chrono::milliseconds(250) && done < total_)) return;
    drawn_ = now;
    const double seconds = std::chrono::duration<double>(now - start_).count();
    std::fprintf(out_, "\r%zu/%zu devices done, %zu failed, %.1f/s\033[K", done, total_, failed,
                 seconds > 0 ? static_cast<double>(done) / seconds : 0.0);
    std::fflush(out_);
  }
  void erase() {
    if (shown_) std::fprintf(out_, "\r\033[K");
  }

 private:
  std::FILE* out_;
  std::size_t total_;
  bool shown_;
  Clock::time_point start_ = Clock::now();
  Clock::time_point drawn_{};
};

struct Received {
  std::string topic;
  std::string payload;
  bool retained = false;
};

// A short-lived client on the calling thread: connect, subscribe, publish, collect messages.
class SendClient {
 public:
  // A client id of its own: reusing the daemon's would take its session over.
  explicit SendClient(const Config& config)
      : client_(fmt::format("{}-send-{}", config.mqtt_client_id, ::getpid()), true, this) {
    mosquitto_connect_callback_set(client_.get(), &SendClient::on_connect);
    mosquitto_subscribe_callback_set(client_.get(), &SendClient::on_subscribe);
    mosquitto_publish_callback_set(client_.get(), &SendClient::on_publish);
    mosquitto_message_callback_set(client_.get(), &SendClient::on_message);
    client_.configure(mqtt::connection_settings(config));
  }

  // Connects and waits for the CONNACK; the reason on failure.
  std::optional<std::string> connect(Clock::time_point deadline) {
    const mqtt::ConnectionSettings& broker = client_.settings();
    const int rc = client_.connect();
    if (rc != MOSQ_ERR_SUCCESS)
      return fmt::format("broker {}:{} unreachable: {}", broker.host, broker.port,
                         mqtt::describe_rc(rc));
    if (!loop_until([&] { return connack_.has_value(); }, deadline))
      return fmt::format("no answer from broker {}:{}", broker.host, broker.port);
    if (*connack_ != 0)
      return fmt::format("broker {}:{} refused the connection: {}", broker.host, broker.port,
                         mosquitto_connack_string(*connack_));
    return std::nullopt;
  }

  bool subscribe(const std::vector<std::string>& topics, Clock::time_point deadline) {
    for (const std::string& topic : topics) {
      int mid = 0;
      if (mosquitto_subscribe(client_.get(), &mid, topic.c_str(), 1) != MOSQ_ERR_SUCCESS)
        return false;
      pending_.insert(mid);
    }
    return loop_until([&] { return pending_.empty(); }, deadline);
  }

  bool publish(const std::string& topic, const std::string& payload) {
    int mid = 0;
    if (mosquitto_publish(client_.get(), &mid, topic.c_str(), static_cast<int>(payload.size()),
                          payload.data(), 1, false) != MOSQ_ERR_SUCCESS)
      return false;
    pending_.insert(mid);
    return true;
  }

  bool flush(Clock::time_point deadline) {
    return loop_until([&] { return pending_.empty(); }, deadline);
  }

  template <class Done>
  bool loop_until(Done done, Clock::time_point deadline) {
    while (!done()) {
      if (Clock::now() >= deadline || failed_) return false;
      if (mosquitto_loop(client_.get(), 100, 1) != MOSQ_ERR_SUCCESS) failed_ = true;
    }
    return true;
  }

  const std::vector<Received>& received() const { return received_; }
  bool failed() const { return failed_; }

  void disconnect() {
    mosquitto_disconnect(client_.get());
    mosquitto_loop(client_.get(), 50, 1);
  }

 private:
  static void on_connect(mosquitto*, void* self, int rc) {
    static_cast<SendClient*>(self)->connack_ = rc;
  }
  static void on_subscribe(mosquitto*, void* self, int mid, int, const int*) {
    static_cast<SendClient*>(self)->pending_.erase(mid);
  }
  static void on_publish(mosquitto*, void* self, int mid) {
    static_cast<SendClient*>(self)->pending_.erase(mid);
  }
  static void on_message(mosquitto*, void* self, const mosquitto_message* message) {
    Received received{message->topic, {}, message->retain};
    if (message->payloadlen > 0)
      received.payload.assign(static_cast<const char*>(message->payload),
                              static_cast<std::size_t>(message->payloadlen));
    static_cast<SendClient*>(self)->received_.push_back(std::move(received));
  }

  mqtt::Client client_;
  std::optional<int> connack_;
  std::set<int> pending_;
  std::vector<Received> received_;
  bool failed_ = false;
};

std::string random_id() {
  CryptoPP::AutoSeededRandomPool rng;
  CryptoPP::byte bytes[8];
  rng.GenerateBlock(bytes, sizeof bytes);
  std::string id = "send-";
  for (CryptoPP::byte b : bytes) id += fmt::format("{:02x}", b);
  return id;
}

std::string request_json(const SendOptions& options, const std::string& device,
                         const std::string& request_id) {
  JsonObjectWriter json;
  json.field("device_id", device)
      .field("action", options.action)
      .optional_field("user_id", options.user)
      .field("request_id", request_id)
      .field("ts", static_cast<std::int64_t>(std::time(nullptr)));
  return json.str();
}

std::string json_member(const rapidjson::Value& object, const char* name) {
  if (!object.IsObject()) return {};
  auto it = object.FindMember(name);
  return it != object.MemberEnd() && it->value.IsString()
             ? std::string(it->value.GetString(), it->value.GetStringLength())
             : std::string();
}

// What the newest status message of each agent says, by agent id (the topic's client id level).
struct AgentStatus {
  bool online = false;
  std::string public_key;  // empty when the message has none
};

std::map<std::string, AgentStatus> agent_statuses(const std::vector<Received>& received,
                                                  const std::string& base) {
  const std::string prefix = topics::agents_prefix(base);
  constexpr std::string_view kSuffix = "/status";
  std::map<std::string, AgentStatus> statuses;
  for (const Received& message : received) {
    const std::string& topic = message.topic;
    if (topic.size() <= prefix.size() + kSuffix.size() ||
        topic.compare(0, prefix.size(), prefix) != 0 ||
        topic.compare(topic.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0)
      continue;
    const std::string id =
        topic.substr(prefix.size(), topic.size() - prefix.size() - kSuffix.size());
    if (id.find('/') != std::string::npos) continue;
    rapidjson::Document doc;
    doc.Parse(message.payload.data(), message.payload.size());
    AgentStatus status;  // an empty payload (a cleared retained status) means gone
    status.online = json_member(doc, "status") == "online";
    status.public_key = json_member(doc, "public_key");
    statuses[id] = std::move(status);  // in arrival order: the newest wins
  }
  return statuses;
}

// The --encrypt-to-agent key (SPEC section 7), or the reason there is none.
struct AgentKey {
  std::string public_pem;
  std::string problem;
};

AgentKey find_agent_key(SendClient& client, const SendOptions& options, const std::string& base,
                        Clock::time_point deadline) {
  if (options.agent) {
    const std::string topic = topics::agent_status(base, *options.agent);
    auto usable = [&] {
      const auto statuses = agent_statuses(client.received(), base);
      const auto found = statuses.find(*options.agent);
      return found != statuses.end() && found->second.online && !found->second.public_key.empty();
    };
    // The retained status arrives right after the subscription is granted.
    client.loop_until(usable, std::min(deadline, Clock::now() + std::chrono::seconds(3)));
    const auto statuses = agent_statuses(client.received(), base);
    const auto found = statuses.find(*options.agent);
    if (found == statuses.end())
      return {{},
              fmt::format("no retained status on {}: no agent with MQTT_CLIENT_ID={} has been "
                          "connected to this broker",
                          topic, *options.agent)};
    if (!found->second.online)
      return {
          {},
          fmt::format("agent {} is offline (its retained status on {})", *options.agent, topic)};
    if (found->second.public_key.empty())
      return {
          {},
          fmt::format("the status of agent {} on {} carries no public_key", *options.agent, topic)};
    return {found->second.public_key, {}};
  }

  // Retained statuses come right after the SUBACK, but nothing says when the last one has: wait
  // a bounded moment for them.
  client.loop_until([] { return false; }, std::min(deadline, Clock::now() + kAgentDiscovery));
  if (client.failed()) return {{}, "lost the connection to the broker"};
  std::vector<std::string> online, offline;
  std::string public_pem;
  for (const auto& [id, status] : agent_statuses(client.received(), base)) {
    if (status.online && !status.public_key.empty()) {
      online.push_back(id);
      public_pem = status.public_key;
    } else {
      offline.push_back(id);
    }
  }
  const std::string filter = topics::agent_status_filter(base);
  if (online.size() == 1) return {public_pem, {}};
  if (online.empty())
    return {{},
            fmt::format("no agent online: no retained status on {} says \"online\" with a "
                        "public key{}; name the agent with --agent ID (its MQTT client id; "
                        "RabbitMQ, for one, delivers no retained messages to wildcard "
                        "subscriptions)",
                        filter,
                        offline.empty() ? std::string()
                                        : fmt::format(" (offline: {})", fmt::join(offline, ", ")))};
  return {{},
          fmt::format("several agents online on {}: {}; choose one with --agent ID", filter,
                      fmt::join(online, ", "))};
}

struct Pending {
  std::string device;
  std::string request_id;
  std::optional<std::string> response;  // payload
  bool ok = false;
  // The response names a key (a fingerprint): its key message is awaited too. Which actions
  // publish a key is the plugins' business, so the answer says it rather than the action name.
  bool with_key = false;
  std::optional<std::string> key;  // payload
};

}  // namespace

int run_send(const Config& config, const SendOptions& options, std::FILE* out, std::FILE* err) {
  auto fail = [&](int code, const std::string& text) {
    std::fprintf(err, "provision-agent send: %s\n", text.c_str());
    return code;
  };
  for (const std::string& device : options.devices)
    if (!keystore::is_valid_identifier(device))
      return fail(kExitConfig, fmt::format("invalid device id \"{}\"", device));
  if (options.user && !keystore::is_valid_identifier(*options.user))
    return fail(kExitConfig, fmt::format("invalid user id \"{}\"", *options.user));
  if (options.agent && !options.encrypt_to_agent)
    return fail(kExitConfig, "--agent names the agent for --encrypt-to-agent");
  if (options.agent &&
      (options.agent->empty() || options.agent->find_first_of("/+#") != std::string::npos))
    return fail(kExitConfig, fmt::format("invalid agent id \"{}\"", *options.agent));
  if (options.sign_key && !options.encrypt_pubkey && !options.encrypt_to_agent)
    return fail(kExitConfig,
                "--sign needs --encrypt or --encrypt-to-agent (the signature covers the "
                "ciphertext)");
  if (options.mode != "EAX" && options.mode != "GCM")
    return fail(kExitConfig, fmt::format("invalid --mode \"{}\": EAX or GCM", options.mode));

  std::string public_pem;
  keystore::Secret sign_pem;
  try {
    if (options.encrypt_pubkey) public_pem = keystore::read_file(*options.encrypt_pubkey);
    if (options.sign_key) sign_pem = keystore::Secret::take(keystore::read_file(*options.sign_key));
  } catch (const std::system_error& error) {
    return fail(kExitConfig, fmt::format("cannot read a key file: {}", error.what()));
  }

  const auto wait = options.wait.count() > 0 ? options.wait : std::chrono::seconds(10);
  const auto deadline = Clock::now() + wait;
  SendClient client(config);
  if (auto problem = client.connect(deadline)) return fail(1, *problem);

  const std::string& base = config.provision_topic_base;
  std::vector<std::string> subscriptions;
  if (options.wait.count() > 0)
    for (const std::string& device : options.devices) {
      subscriptions.push_back(topics::response(base, device));
      subscriptions.push_back(topics::public_key(config.keys_topic_base, device));
    }
  if (options.encrypt_to_agent)
    subscriptions.push_back(options.agent ? topics::agent_status(base, *options.agent)
                                          : topics::agent_status_filter(base));
  if (!client.subscribe(subscriptions, deadline))
    return fail(1,
                "the broker did not confirm the "
                "subscriptions");

  if (options.encrypt_to_agent) {
    AgentKey agent_key = find_agent_key(client, options, base, deadline);
    if (!agent_key.problem.empty()) return fail(1, agent_key.problem);
    public_pem = std::move(agent_key.public_pem);
  }

  std::vector<Pending> pending;
  for (const std::string& device : options.devices) {
    Pending entry{device, random_id(), {}, false, false, {}};
    std::string payload = request_json(options, device, entry.request_id);
    if (options.encrypt_pubkey || options.encrypt_to_agent) {
      try {
        e2ee::SealOptions seal;
        seal.mode = options.mode;
        Envelope envelope = e2ee::seal_envelope(payload, public_pem, seal);
        if (options.sign_key) e2ee::sign_envelope(envelope, sign_pem.view());
        keystore::Secret::wipe(payload);
        payload = e2ee::envelope_json(envelope);
      } catch (const std::exception& error) {
        return fail(kExitConfig, fmt::format("cannot encrypt or sign: {}", error.what()));
      }
    }
    if (!client.publish(topics::request(base, device), payload))
      return fail(1, fmt::format("cannot publish the request for {}", device));
    pending.push_back(std::move(entry));
  }
  if (!client.flush(deadline)) return fail(1, "the broker did not acknowledge every request");
  if (options.wait.count() == 0) {
    for (const Pending& entry : pending)
      std::fprintf(out, "%s sent %s\n", entry.device.c_str(), entry.request_id.c_str());
    client.disconnect();
    return 0;
  }

  std::size_t seen = 0;
  Progress progress(out, pending.size());
  auto collect = [&] {
    const auto& received = client.received();
    for (; seen < received.size(); ++seen) {
      const Received& message = received[seen];
      if (message.retained) continue;  // an earlier key, not this request's
      rapidjson::Document doc;
      doc.Parse(message.payload.data(), message.payload.size());
      for (Pending& entry : pending) {
        if (message.topic == topics::response(base, entry.device)) {
          // A request refused before it could be read (decrypt_failed, unauthorized) is answered
          // without its request_id: it is this device's, as only one request per device is out.
          const bool unread = !doc.HasParseError() && doc.IsObject() &&
                              !doc.HasMember("request_id") && !entry.response;
          if (json_member(doc, "request_id") != entry.request_id && !unread) continue;
          entry.response = message.payload;
          entry.ok = json_member(doc, "status") == "ok";
          entry.with_key = entry.ok && !json_member(doc, "fingerprint").empty();
        } else if (message.topic == topics::public_key(config.keys_topic_base, entry.device)) {
          // json key format carries the request id; pem format is the bare key text.
          if (!doc.HasParseError() ? json_member(doc, "request_id") == entry.request_id
                                   : !message.payload.empty())
            entry.key = message.payload;
        }
      }
    }
    std::size_t done = 0, failed = 0;
    for (const Pending& entry : pending) {
      done += entry.response && (!entry.with_key || entry.key) ? 1 : 0;
      failed += entry.response && !entry.ok ? 1 : 0;
    }
    progress.update(done, failed);
    return done == pending.size();
  };
  client.loop_until(collect, deadline);
  progress.erase();
  client.disconnect();

  int status_code = 0;
  for (const Pending& entry : pending) {
    if (!entry.response) {
      std::fprintf(err, "provision-agent send: %s: no response within %lld s (request_id %s)\n",
                   entry.device.c_str(), static_cast<long long>(wait.count()),
                   entry.request_id.c_str());
      status_code = 1;
      continue;
    }
    std::fprintf(out, "%s response %s\n", entry.device.c_str(), entry.response->c_str());
    if (entry.key) std::fprintf(out, "%s key %s\n", entry.device.c_str(), entry.key->c_str());
    if (!entry.ok) {
      rapidjson::Document doc;
      doc.Parse(entry.response->c_str());
      const auto error = doc.IsObject() && doc.HasMember("error") ? &doc["error"] : nullptr;
      std::fprintf(err, "provision-agent send: %s: %s: %s\n", entry.device.c_str(),
                   error ? json_member(*error, "code").c_str() : "error",
                   error ? json_member(*error, "message").c_str() : "");
      status_code = 1;
    } else if (entry.with_key && !entry.key) {
      std::fprintf(err, "provision-agent send: %s: no public key published within %lld s\n",
                   entry.device.c_str(), static_cast<long long>(wait.count()));
      status_code = 1;
    }
  }
  std::fflush(out);
  return status_code;
}

}  // namespace pa

namespace pa::cli {
namespace {

class SendCommand : public Command {
 public:
  void define(CLI::App& app) override {
    app.add_option("ACTION", options_.action,
                   "generate_and_publish_key (request, generate), update (rotate), publish_key, "
                   "delete, or an action a plugin adds")
        ->required();
    app.add_option("DEVICE", options_.devices, "device ids (several make a batch)")->required();
    user_option_ = app.add_option("--user", user_, "user_id of the request")->type_name("USER");
    encrypt_option_ =
        app.add_option("--encrypt", public_key_,
                       "encrypt to this RSA public key PEM (a device's sensor_public.pem)")
            ->type_name("PUBKEY.pem");
    CLI::Option* to_agent =
        app.add_flag("--encrypt-to-agent", options_.encrypt_to_agent,
                     "encrypt to the agent key from the retained status of the agent named by "
                     "--agent, or of the only agent online");
    encrypt_option_->excludes(to_agent);
    agent_option_ = app.add_option("--agent", agent_,
                                   "with --encrypt-to-agent: the agent's MQTT client id (its "
                                   "status topic P/agents/ID/status); needed when several agents "
                                   "are online")
                        ->type_name("ID");
    agent_option_->needs(to_agent);
    sign_option_ =
        app.add_option("--sign", sign_key_,
                       "sign the ciphertext with this RSA private key PEM (the server's)")
            ->type_name("KEY.pem");
    app.add_option("--mode", options_.mode, "AES mode of the envelope: EAX (default) or GCM")
        ->type_name("EAX|GCM");
    app.add_option("--wait", wait_, "seconds to wait for all responses (0: do not wait)")
        ->check(CLI::Range(0, 3600))
        ->type_name("SECONDS");
  }

  int run(const ConfigInputs& inputs) override {
    const Config config = load_config(inputs);
    if (user_option_->count() > 0) options_.user = user_;
    if (encrypt_option_->count() > 0) options_.encrypt_pubkey = public_key_;
    if (sign_option_->count() > 0) options_.sign_key = sign_key_;
    if (agent_option_->count() > 0) options_.agent = agent_;
    options_.wait = std::chrono::seconds(wait_);
    log_init(LogLevel::warning);
    return run_send(config, options_, stdout, stderr);
  }

 private:
  SendOptions options_;
  std::string user_, public_key_, sign_key_, agent_;
  int wait_ = 30;
  CLI::Option* user_option_ = nullptr;
  CLI::Option* encrypt_option_ = nullptr;
  CLI::Option* agent_option_ = nullptr;
  CLI::Option* sign_option_ = nullptr;
};

}  // namespace

std::unique_ptr<Command> make_send_command() {
  return std::make_unique<SendCommand>();
}

}  // namespace pa::cli
