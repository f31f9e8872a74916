#include "agent_harness.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/stat.h>

#include <csignal>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <thread>

namespace pa::test {

Agent::Agent(int port, std::map<std::string, std::string> env) {
  client_id_ = unique_name("pa-it-agent-");
  ::mkdir(root_.file("state").c_str(), 0700);
  env_ = {
      {"MQTT_HOST", "127.0.0.1"},
      {"MQTT_PORT", std::to_string(port)},
      {"MQTT_CLIENT_ID", client_id_},
      {"PROVISION_KEYS_DIR", keys_dir()},
      {"PROVISION_PLUGIN_DIR", PA_PLUGIN_BUILD_DIR},
      {"PROVISION_KEY_TYPE", "ec-p256"},
      {"PROVISION_E2EE_POLICY", "off"},
      {"STATE_DIRECTORY", root_.file("state")},
      {"LOG_LEVEL", "debug"},
  };
  for (auto& [name, value] : env) env_[name] = value;
  client_id_ = env_["MQTT_CLIENT_ID"];
}

Agent::~Agent() {
  if (process_ && process_->running()) process_->stop(5s);
  if (::testing::Test::HasFailure()) {
    std::cerr << "---- provision-agent log (" << client_id_ << ") ----\n"
              << log() << "---- end of log ----\n";
  }
}

void Agent::start(const std::vector<std::string>& arguments) {
  if (process_ && process_->running()) return;
  ProcessOptions options;
  options.env = env_;
  options.clean_env = true;
  options.log_file = logs_.file("agent.log");
  options.working_dir = root_.file("state");
  auto command = agent_command();
  command.push_back("run");
  command.insert(command.end(), arguments.begin(), arguments.end());
  process_.emplace(command, options);
}

int Agent::stop(std::chrono::milliseconds timeout) {
  if (!process_) return -1;
  return process_->stop(timeout);
}

void Agent::kill() {
  if (!process_) return;
  process_->signal(SIGKILL);
  process_->wait_exit(10s);
}

bool Agent::running() {
  return process_ && process_->running();
}

std::optional<int> Agent::wait_exit(std::chrono::milliseconds timeout) {
  if (!process_) return std::nullopt;
  return process_->wait_exit(timeout);
}

std::string Agent::log() const {
  return read_file(logs_.file("agent.log"));
}

std::string Agent::device_dir(const std::string& device, const std::string& user) const {
  return user.empty() ? keys_dir() + "/" + device : keys_dir() + "/" + user + "/" + device;
}

PluginFolder::PluginFolder() : plugins_(dir_.file("plugins")), markers_(dir_.file("markers")) {
  namespace fs = std::filesystem;
  fs::create_directories(plugins_ + "/exec.d");
  fs::create_directories(markers_);
  for (const char* name : {"keygen.so", "revoke.so", "exec.so"})
    fs::copy_file(fs::path(PA_PLUGIN_BUILD_DIR) / name, fs::path(plugins_) / name);
  // Not group- or world-writable, whatever the umask: the loader refuses such folders.
  for (const std::string& folder : {dir_.path(), plugins_, plugins_ + "/exec.d"})
    ::chmod(folder.c_str(), 0755);
}

void PluginFolder::add_executable(const std::string& name, const std::string& body) {
  const std::string path = plugins_ + "/exec.d/" + name;
  write_file(path, body, 0755);
  ::chmod(path.c_str(), 0755);
}

void PluginFolder::add_hold_action(const std::string& name) {
  add_executable(name,
                 "#!/bin/sh\n"
                 "touch " +
                     shell_quote(markers_) +
                     "/started-\"$DEVICE_ID\"\n"
                     "i=0\n"
                     "while [ ! -e " +
                     shell_quote(markers_) +
                     "/release-\"$DEVICE_ID\" ] && "
                     "[ $i -lt 500 ]; do sleep 0.05; i=$((i + 1)); done\n"
                     "echo released\n");
}

bool PluginFolder::wait_started(const std::string& device,
                                std::chrono::milliseconds timeout) const {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!file_exists(markers_ + "/started-" + device)) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

void PluginFolder::release(const std::string& device) const {
  write_file(markers_ + "/release-" + device, "");
}

std::vector<std::string> agent_command() {
  std::vector<std::string> command;
  std::istringstream emulator(PA_AGENT_EMULATOR);
  for (std::string word; emulator >> word;) command.push_back(word);
  command.push_back(PA_AGENT_BINARY);
  return command;
}

std::string agent_shell_command() {
  std::string line;
  for (const auto& word : agent_command()) line += (line.empty() ? "" : " ") + shell_quote(word);
  return line;
}

std::unique_ptr<MqttClient> make_observer(int port, MqttClientOptions options) {
  auto observer = std::make_unique<MqttClient>(port, std::move(options));
  observer->subscribe("provision/+/response");
  observer->subscribe("keys/+/public");
  observer->subscribe("provision/agents/+/status");
  return observer;
}

bool wait_online(MqttClient& observer, const Agent& agent, std::chrono::milliseconds timeout) {
  return observer
      .wait_for(agent.status_topic(), timeout,
                [&](const Message& message) {
                  auto json = parse_json(message.payload);
                  return !json.HasParseError() && json_string(json, "status") == "online" &&
                         json_string(json, "agent_id") == agent.client_id();
                })
      .has_value();
}

namespace {
MqttClient::Predicate with_request_id(const std::string& request_id) {
  return [request_id](const Message& message) {
    auto json = parse_json(message.payload);
    return !json.HasParseError() && json_string(json, "request_id") == request_id;
  };
}
}  // namespace

std::optional<Message> wait_response(MqttClient& observer, const std::string& device,
                                     const std::string& request_id,
                                     std::chrono::milliseconds timeout) {
  return observer.wait_for("provision/" + device + "/response", timeout,
                           with_request_id(request_id));
}

std::optional<Message> wait_key(MqttClient& observer, const std::string& device,
                                const std::string& request_id, std::chrono::milliseconds timeout) {
  return observer.wait_for("keys/" + device + "/public", timeout, with_request_id(request_id));
}

std::string openssl_fingerprint(const std::string& public_pem_path) {
  auto result = run_command("openssl pkey -pubin -in " + shell_quote(public_pem_path) +
                            " -outform DER | openssl dgst -sha256 -binary | openssl base64 -A");
  if (result.exit_code != 0) return "openssl failed: " + result.output;
  std::string base64 = result.output;
  base64.erase(std::remove_if(base64.begin(), base64.end(),
                              [](char c) { return c == '=' || c == '\n' || c == '\r'; }),
               base64.end());
  return "SHA256:" + base64;
}

std::vector<Message> responses_with_id(const MqttClient& observer, const std::string& device,
                                       const std::string& request_id) {
  std::vector<Message> found;
  for (Message& message : observer.messages("provision/" + device + "/response"))
    if (with_request_id(request_id)(message)) found.push_back(std::move(message));
  return found;
}

std::string error_code(const rapidjson::Value& response) {
  if (!response.IsObject()) return {};
  auto error = response.FindMember("error");
  if (error == response.MemberEnd()) return {};
  return json_string(error->value, "code");
}

std::string json_quote(const std::string& text) {
  rapidjson::StringBuffer buffer;
  rapidjson::Writer<rapidjson::StringBuffer> writer(buffer);
  writer.String(text.data(), static_cast<rapidjson::SizeType>(text.size()));
  return buffer.GetString();
}

V5Subscriber::V5Subscriber(int port, const std::string& topic, const std::string& format)
    : port_(port),
      file_(dir_.file("messages.txt")),
      probe_(unique_name("pa-it/probe-")),
      process_({"/bin/sh", "-c",
                fmt::format("exec mosquitto_sub -V 5 -h 127.0.0.1 -p {} -q 1 -t {} -t {} -F {} "
                            "-C 2 -W 30 > {}",
                            port, shell_quote(topic), shell_quote(probe_), shell_quote(format),
                            shell_quote(file_))}) {}

bool V5Subscriber::wait_subscribed() {
  MqttClient prober(port_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (output().find(probe_) == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    prober.publish(probe_, "probe", 0);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return output().find(probe_) != std::string::npos;
}

}  // namespace pa::test
