// Runs the real provision-agent binary against a real mosquitto for the integration tests.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace pa::test {

inline constexpr auto kOnlineTimeout = 15s;
inline constexpr auto kResponseTimeout = 30s;

// A provision-agent process with its own temporary root: <root>/sensor_keys is the key store,
// <root>/state its state folder and working folder. The log lives outside the root so that the
// root holds nothing but what the agent wrote. Stopped by PID in the destructor; when the test
// failed, the agent's log is printed.
class Agent {
 public:
  // `env` is added to (and overrides) the defaults: broker 127.0.0.1:port, a unique client id,
  // the key store, the bundled plugins, ec-p256 keys, E2EE policy off.
  Agent(int port, std::map<std::string, std::string> env = {});
  ~Agent();
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Removes a variable from the agent's environment (before start()), e.g. to get its default.
  void unset_env(const std::string& name) { env_.erase(name); }
  // Sets a variable for the next start(), e.g. to restart the same store under another clock.
  void set_env(const std::string& name, const std::string& value) { env_[name] = value; }
  // The environment the agent starts with (clean: nothing else is inherited).
  const std::map<std::string, std::string>& env() const { return env_; }
  // Runs `provision-agent run` followed by `arguments`.
  void start(const std::vector<std::string>& arguments = {});
  // SIGTERM and a bounded wait; the exit status.
  int stop(std::chrono::milliseconds timeout = 15s);
  // SIGKILL and reap: a crash or power cut as the broker sees it.
  void kill();
  bool running();
  // The agent's PID while it runs (-1 before start()).
  pid_t pid() const { return process_ ? process_->pid() : -1; }
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  std::string log() const;

  const std::string& client_id() const { return client_id_; }
  const std::string& root() const { return root_.path(); }
  std::string keys_dir() const { return root_.file("sensor_keys"); }
  std::string state_dir() const { return root_.file("state"); }
  // <keys>/<user>/<device> or <keys>/<device> without a user.
  std::string device_dir(const std::string& device, const std::string& user = {}) const;
  std::string status_topic() const { return "provision/agents/" + client_id_ + "/status"; }

 private:
  TempDir root_;
  TempDir logs_;
  std::map<std::string, std::string> env_;
  std::string client_id_;
  std::optional<Process> process_;
};

// A PROVISION_PLUGIN_DIR of its own: copies of the bundled plugins and an exec.d whose executables
// serve actions (SPEC section 6), with the modes the loader and the exec plugin demand.
class PluginFolder {
 public:
  PluginFolder();
  const std::string& path() const { return plugins_; }
  // Adds exec.d/<name> with `body` (a script with its #! line).
  void add_executable(const std::string& name, const std::string& body);
  // Adds the action `name`, which holds a device's queue for as long as a test needs without
  // timing anything: it leaves a marker when it starts and returns once release() was called for
  // its device (or after 25 s, within PROVISION_EXEC_TIMEOUT's default 30 s).
  void add_hold_action(const std::string& name = "hold");
  // Waits (bounded) until the hold action started for `device`.
  bool wait_started(const std::string& device, std::chrono::milliseconds timeout = 10s) const;
  void release(const std::string& device) const;

 private:
  TempDir dir_;
  std::string plugins_;
  std::string markers_;
};

// The command that runs the agent under test: PA_AGENT_EMULATOR's words first when it is not
// empty (qemu-user for a cross build, CMAKE_CROSSCOMPILING_EMULATOR), then PA_AGENT_BINARY.
std::vector<std::string> agent_command();
// The same command as shell words for run_command().
std::string agent_shell_command();

// A test client subscribed to responses, public keys and agent status messages.
std::unique_ptr<MqttClient> make_observer(int port, MqttClientOptions options = {});

// Waits for the agent's retained/live {"status":"online","agent_id":<client id>} message.
bool wait_online(MqttClient& observer, const Agent& agent,
                 std::chrono::milliseconds timeout = kOnlineTimeout);

// The response on provision/<device>/response with this request_id.
std::optional<Message> wait_response(MqttClient& observer, const std::string& device,
                                     const std::string& request_id,
                                     std::chrono::milliseconds timeout = kResponseTimeout);
// The published key on keys/<device>/public with this request_id.
std::optional<Message> wait_key(MqttClient& observer, const std::string& device,
                                const std::string& request_id,
                                std::chrono::milliseconds timeout = kResponseTimeout);

// "SHA256:" + unpadded base64 of the SHA-256 of the DER of a public key PEM file, computed with
// the openssl CLI.
std::string openssl_fingerprint(const std::string& public_pem_path);

// Every response on provision/<device>/response with this request_id, in arrival order.
std::vector<Message> responses_with_id(const MqttClient& observer, const std::string& device,
                                       const std::string& request_id);

// error.code of a response ("" when absent).
std::string error_code(const rapidjson::Value& response);

// A JSON string literal for `text` (quotes and escapes).
std::string json_quote(const std::string& text);

// An MQTT 5 mosquitto_sub on `topic` and a probe topic of its own, printing each message as
// `format` (mosquitto_sub -F) to a file, and exiting after the probe and one more message (or
// 30 s): what a server sees of user properties and correlation data.
class V5Subscriber {
 public:
  V5Subscriber(int port, const std::string& topic, const std::string& format);
  // Publishes to the probe topic until the subscriber printed it: proof that it subscribed.
  // false when it did not within 10 s.
  bool wait_subscribed();
  // Waits for the one message after the probe; what the subscriber printed.
  bool wait_exit(std::chrono::milliseconds timeout) {
    return process_.wait_exit(timeout).has_value();
  }
  std::string output() const { return read_file(file_); }

 private:
  int port_;
  TempDir dir_;
  std::string file_;
  std::string probe_;
  Process process_;
};

}  // namespace pa::test
