// Test support shared by the unit and integration tests: temporary folders, free ports, child
// processes stopped by their PID, a real mosquitto broker on 127.0.0.1 and an MQTT test client.
// Every wait in here is bounded.
#pragma once

#include <rapidjson/document.h>

#include <sys/types.h>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

struct mosquitto;
struct mosquitto_message;

namespace pa::mqtt {
class Client;
}

namespace pa::test {

using namespace std::chrono_literals;

// A fresh folder made with mkdtemp under $TMPDIR (or /tmp), removed with its contents when the
// object dies. Move-only.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(TempDir&& other) noexcept;
  TempDir& operator=(TempDir&& other) noexcept;
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::string& path() const { return path_; }
  // path() + "/" + relative.
  std::string file(const std::string& relative) const;

 private:
  std::string path_;
};

// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back, close).
int free_port();

struct CommandResult {
  int exit_code = -1;  // the exit status, or 128 + signal number when killed by a signal
  std::string output;  // stdout and stderr together
};
// Runs `shell_command` through /bin/sh with stderr merged into stdout.
CommandResult run_command(const std::string& shell_command);

// Quotes a string for use inside a /bin/sh command line.
std::string shell_quote(const std::string& text);

// Small file helpers.
std::string read_file(const std::string& path);
void write_file(const std::string& path, const std::string& content, int mode = 0644);
bool file_exists(const std::string& path);
// Permission bits (st_mode & 07777) of a path, or -1 when it does not exist.
int file_mode(const std::string& path);
// Every path under `root` (files and folders, recursively), relative to it, sorted.
std::vector<std::string> list_tree(const std::string& root);

struct ProcessOptions {
  // Variables added to (or replacing those of) the environment the child gets.
  std::map<std::string, std::string> env;
  // When true the child starts from an empty environment (plus PATH) and `env`.
  bool clean_env = false;
  // stdout and stderr of the child go here; empty means a file in a private TempDir.
  std::string log_file;
  std::string working_dir;
};

// A child process started with fork/exec. The destructor kills it by PID (SIGKILL) if it still
// runs and reaps it. Move-only.
class Process {
 public:
  Process(std::vector<std::string> argv, ProcessOptions options = {});
  ~Process();
  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  void signal(int signal_number);
  // SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit status (128 + signal number when
  // killed by a signal), or the earlier status when the process had already ended.
  int stop(std::chrono::milliseconds timeout = 10s);
  // Waits up to `timeout` for the process to end by itself; its exit status if it did.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  // What the process wrote to stdout and stderr so far.
  std::string log() const;
  const std::string& log_file() const { return log_file_; }

 private:
  bool reap(bool block);

  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  std::optional<TempDir> log_dir_;
  std::string log_file_;
};

struct TlsFiles {
  std::string ca_cert;  // PEM of the test CA
  std::string ca_key;
  std::string server_cert;  // CN=localhost, subjectAltName DNS:localhost, IP:127.0.0.1
  std::string server_key;
};

struct BrokerOptions {
  bool persistence = false;
  // When set, the broker refuses anonymous clients and accepts exactly these credentials.
  std::optional<std::pair<std::string, std::string>> user_password;
  // When set, the listener speaks TLS only.
  std::optional<TlsFiles> tls;
};

// A real /usr/sbin/mosquitto listening on 127.0.0.1 on a free port, configured in its own TempDir.
// The constructor starts it and waits until the port accepts connections.
class Broker {
 public:
  explicit Broker(BrokerOptions options = {});
  ~Broker();
  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  int port() const { return port_; }
  const std::string& folder() const { return dir_.path(); }
  // Starts it again on the same port (after stop()); waits until the port accepts connections.
  void start();
  void stop();
  bool running() const { return process_.has_value(); }
  std::string log() const;

  // Makes a CA and a server certificate for localhost/127.0.0.1 in `dir` with the openssl CLI.
  static TlsFiles make_tls_files(const TempDir& dir);

 private:
  TempDir dir_;
  BrokerOptions options_;
  int port_ = 0;
  std::optional<Process> process_;
  std::string log_file_;
};

// Waits (bounded) until 127.0.0.1:port accepts a TCP connection.
bool wait_for_port(int port, std::chrono::milliseconds timeout);

struct Message {
  std::string topic;
  std::string payload;
  int qos = 0;
  bool retain = false;
};

struct MqttClientOptions {
  std::string client_id;  // empty: a unique one
  std::optional<std::string> username;
  std::optional<std::string> password;
  std::optional<std::string> ca_file;  // enables TLS
  std::string host = "127.0.0.1";
  bool clean_session = true;
};

// An MQTT client (agent/mqtt/client.hpp) with its own network thread that records every message it
// receives. The constructor connects and waits (bounded) for the CONNACK; it throws on failure.
class MqttClient {
 public:
  using Predicate = std::function<bool(const Message&)>;

  explicit MqttClient(int port, MqttClientOptions options = {});
  ~MqttClient();
  MqttClient(const MqttClient&) = delete;
  MqttClient& operator=(const MqttClient&) = delete;

  // Subscribes at QoS 1 and waits for the SUBACK; throws on failure or time-out.
  void subscribe(const std::string& topic_filter, std::chrono::milliseconds timeout = 10s);
  // Publishes and waits until the broker acknowledged it (PUBACK for QoS 1); throws on failure.
  void publish(const std::string& topic, const std::string& payload, int qos = 1,
               bool retain = false, std::chrono::milliseconds timeout = 10s);

  // The first recorded message on a topic matching `topic_filter` that satisfies `predicate`,
  // waiting up to `timeout` for it to arrive.
  std::optional<Message> wait_for(const std::string& topic_filter,
                                  std::chrono::milliseconds timeout,
                                  const Predicate& predicate = {});
  // Waits until at least `count` recorded messages match; returns whether they did.
  bool wait_count(const std::string& topic_filter, std::size_t count,
                  std::chrono::milliseconds timeout, const Predicate& predicate = {});
  // Recorded messages on topics matching `topic_filter`, in arrival order.
  std::vector<Message> messages(const std::string& topic_filter) const;
  void clear();
  const std::string& client_id() const { return client_id_; }

 private:
  static void on_connect(mosquitto* client, void* self, int rc);
  static void on_subscribe(mosquitto* client, void* self, int mid, int count, const int* granted);
  static void on_publish(mosquitto* client, void* self, int mid);
  static void on_message(mosquitto* client, void* self, const mosquitto_message* message);
  std::size_t count_matching(const std::string& topic_filter, const Predicate& predicate) const;

  std::unique_ptr<mqtt::Client> client_;  // agent/mqtt's client: one way to set up libmosquitto
  std::string client_id_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<int> connack_;
  std::vector<int> acked_mids_;
  std::vector<Message> received_;
};

// True when `topic` matches the MQTT filter `topic_filter` (+ and # wildcards).
bool topic_matches(const std::string& topic_filter, const std::string& topic);

// Parses JSON; the document has HasParseError() set when the text is not JSON.
rapidjson::Document parse_json(const std::string& text);
// A member as a string ("" when missing or not a string).
std::string json_string(const rapidjson::Value& object, const char* name);
bool json_has(const rapidjson::Value& object, const char* name);

// A unique id for client ids, device ids and folder names: prefix + pid + counter.
std::string unique_name(const std::string& prefix);

}  // namespace pa::test
