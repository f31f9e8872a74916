#include "test_support.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <mosquitto.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

#include "mqtt/client.hpp"

extern char** environ;

namespace pa::test {

namespace fs = std::filesystem;

namespace {

std::string temp_root() {
  const char* tmpdir = std::getenv("TMPDIR");
  if (tmpdir != nullptr && *tmpdir != '\0') return tmpdir;
  return "/tmp";
}

int exit_status_of(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

std::string mosquitto_error(int rc) {
  if (rc == MOSQ_ERR_ERRNO) return std::strerror(errno);
  return mosquitto_strerror(rc);
}

// Gives the owner read, write and search on `folder` and on every folder below it (symlinks are
// not followed), so that what a test left at 0000 or 0500 can be removed.
void make_owner_accessible(const fs::path& folder) {
  std::error_code ignored;
  fs::permissions(folder, fs::perms::owner_all, fs::perm_options::add, ignored);
  std::error_code error;
  for (fs::directory_iterator it(folder, error), end; !error && it != end; it.increment(error)) {
    std::error_code status_error;
    if (it->symlink_status(status_error).type() == fs::file_type::directory) {
      make_owner_accessible(it->path());
    }
  }
}

void remove_tree(const std::string& path) {
  make_owner_accessible(path);
  std::error_code ignored;
  fs::remove_all(path, ignored);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TempDir

TempDir::TempDir() {
  std::string pattern = temp_root() + "/pa-test-XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr) {
    throw std::runtime_error(fmt::format("mkdtemp {}: {}", pattern, std::strerror(errno)));
  }
  path_ = buffer.data();
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  remove_tree(path_);
}

TempDir::TempDir(TempDir&& other) noexcept : path_(std::move(other.path_)) {
  other.path_.clear();
}

TempDir& TempDir::operator=(TempDir&& other) noexcept {
  if (this != &other) {
    if (!path_.empty()) remove_tree(path_);
    path_ = std::move(other.path_);
    other.path_.clear();
  }
  return *this;
}

std::string TempDir::file(const std::string& relative) const {
  return path_ + "/" + relative;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof(address);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    int error = errno;
    ::close(fd);
    throw std::runtime_error(fmt::format("bind 127.0.0.1:0: {}", std::strerror(error)));
  }
  ::close(fd);
  return ntohs(address.sin_port);
}

bool wait_for_port(int port, std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
      sockaddr_in address{};
      address.sin_family = AF_INET;
      address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      address.sin_port = htons(static_cast<uint16_t>(port));
      bool connected = ::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0;
      ::close(fd);
      if (connected) return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
}

CommandResult run_command(const std::string& shell_command) {
  CommandResult result;
  std::string command = "( " + shell_command + " ) 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) {
    result.output = fmt::format("popen failed: {}", std::strerror(errno));
    return result;
  }
  char buffer[4096];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) result.output.append(buffer, n);
  int status = ::pclose(pipe);
  result.exit_code = status == -1 ? -1 : exit_status_of(status);
  return result;
}

std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (char c : text) {
    if (c == '\'') {
      quoted += "'\\''";
    } else {
      quoted += c;
    }
  }
  quoted += "'";
  return quoted;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream content;
  content << in.rdbuf();
  return content.str();
}

void write_file(const std::string& path, const std::string& content, int mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) throw std::runtime_error(fmt::format("open {}: {}", path, std::strerror(errno)));
  std::size_t written = 0;
  while (written < content.size()) {
    ssize_t n = ::write(fd, content.data() + written, content.size() - written);
    if (n < 0) {
      if (errno == EINTR) continue;
      int error = errno;
      ::close(fd);
      throw std::runtime_error(fmt::format("write {}: {}", path, std::strerror(error)));
    }
    written += static_cast<std::size_t>(n);
  }
  ::fchmod(fd, static_cast<mode_t>(mode));
  ::close(fd);
}

bool file_exists(const std::string& path) {
  struct stat info {};
  return ::lstat(path.c_str(), &info) == 0;
}

int file_mode(const std::string& path) {
  struct stat info {};
  if (::lstat(path.c_str(), &info) != 0) return -1;
  return static_cast<int>(info.st_mode & 07777);
}

std::vector<std::string> list_tree(const std::string& root) {
  std::vector<std::string> paths;
  std::error_code error;
  for (fs::recursive_directory_iterator it(root, error), end; !error && it != end;
       it.increment(error)) {
    paths.push_back(fs::relative(it->path(), root).string());
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

std::string unique_name(const std::string& prefix) {
  static std::atomic<unsigned> counter{0};
  return fmt::format("{}{}-{}", prefix, ::getpid(), counter.fetch_add(1));
}

// ---------------------------------------------------------------------------------------------
// Process

Process::Process(std::vector<std::string> argv, ProcessOptions options) {
  if (argv.empty()) throw std::invalid_argument("Process: empty argv");
  if (options.log_file.empty()) {
    log_dir_.emplace();
    log_file_ = log_dir_->file("output.log");
  } else {
    log_file_ = options.log_file;
  }

  // Everything the child needs is prepared before fork: after it, only async-signal-safe calls.
  std::map<std::string, std::string> environment;
  if (options.clean_env) {
    const char* path = std::getenv("PATH");
    environment["PATH"] = path != nullptr ? path : "/usr/bin:/bin:/usr/sbin:/sbin";
  } else {
    for (char** entry = environ; *entry != nullptr; ++entry) {
      std::string text = *entry;
      auto equals = text.find('=');
      if (equals == std::string::npos) continue;
      environment[text.substr(0, equals)] = text.substr(equals + 1);
    }
  }
  for (const auto& [name, value] : options.env) environment[name] = value;
  std::vector<std::string> env_strings;
  env_strings.reserve(environment.size());
  for (const auto& [name, value] : environment) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& entry : env_strings) envp.push_back(entry.data());
  envp.push_back(nullptr);
  std::vector<char*> args;
  for (auto& arg : argv) args.push_back(arg.data());
  args.push_back(nullptr);

  int log_fd = ::open(log_file_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    throw std::runtime_error(fmt::format("open {}: {}", log_file_, std::strerror(errno)));
  }
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  const char* working_dir = options.working_dir.empty() ? nullptr : options.working_dir.c_str();

  pid_t pid = ::fork();
  if (pid < 0) {
    int error = errno;
    ::close(log_fd);
    if (null_fd >= 0) ::close(null_fd);
    throw std::runtime_error(fmt::format("fork: {}", std::strerror(error)));
  }
  if (pid == 0) {
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    // Sockets of the test's MQTT clients must not live on in the child.
    if (::close_range(3, ~0U, 0) != 0) {
      for (int fd = 3; fd < 1024; ++fd) ::close(fd);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (working_dir != nullptr && ::chdir(working_dir) != 0) ::_exit(126);
    ::execve(args[0], args.data(), envp.data());
    ::_exit(127);
  }
  ::close(log_fd);
  if (null_fd >= 0) ::close(null_fd);
  pid_ = pid;
}

Process::~Process() {
  if (pid_ > 0 && !exit_status_.has_value()) {
    ::kill(pid_, SIGKILL);
    reap(true);
  }
}

Process::Process(Process&& other) noexcept
    : pid_(other.pid_),
      exit_status_(other.exit_status_),
      log_dir_(std::move(other.log_dir_)),
      log_file_(std::move(other.log_file_)) {
  other.pid_ = -1;
  other.log_dir_.reset();
}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && !exit_status_.has_value()) {
      ::kill(pid_, SIGKILL);
      reap(true);
    }
    pid_ = other.pid_;
    exit_status_ = other.exit_status_;
    log_dir_ = std::move(other.log_dir_);
    log_file_ = std::move(other.log_file_);
    other.pid_ = -1;
    other.log_dir_.reset();
  }
  return *this;
}

bool Process::reap(bool block) {
  if (pid_ <= 0) return true;
  if (exit_status_.has_value()) return true;
  int status = 0;
  while (true) {
    pid_t result = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    if (result == pid_) {
      exit_status_ = exit_status_of(status);
      return true;
    }
    if (result == 0) return false;
    if (errno == EINTR) continue;
    exit_status_ = -1;  // not our child any more (should not happen)
    return true;
  }
}

bool Process::running() {
  return pid_ > 0 && !reap(false);
}

void Process::signal(int signal_number) {
  if (running()) ::kill(pid_, signal_number);
}

std::optional<int> Process::wait_exit(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!reap(false)) {
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
  return exit_status_;
}

int Process::stop(std::chrono::milliseconds timeout) {
  if (pid_ <= 0) return -1;
  if (!running()) return *exit_status_;
  ::kill(pid_, SIGTERM);
  if (auto status = wait_exit(timeout)) return *status;
  ::kill(pid_, SIGKILL);
  reap(true);
  return *exit_status_;
}

std::string Process::log() const {
  return read_file(log_file_);
}

// ---------------------------------------------------------------------------------------------
// Broker

Broker::Broker(BrokerOptions options) : options_(std::move(options)) {
  port_ = free_port();
  log_file_ = dir_.file("mosquitto.log");
  std::string config;
  config += fmt::format("listener {} 127.0.0.1\n", port_);
  if (::geteuid() == 0)
    config += "user root\n";  // otherwise it drops to "mosquitto" and
                              // cannot read our 0700 temp folder
  config += "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n";
  config += "log_type information\nconnection_messages true\n";
  config += "max_queued_messages 10000\n";
  if (options_.persistence) {
    config += fmt::format("persistence true\npersistence_location {}/\n", dir_.path());
  } else {
    config += "persistence false\n";
  }
  if (options_.user_password) {
    std::string password_file = dir_.file("passwords");
    auto result = run_command(fmt::format(
        "mosquitto_passwd -b -c {} {} {}", shell_quote(password_file),
        shell_quote(options_.user_password->first), shell_quote(options_.user_password->second)));
    if (result.exit_code != 0) {
      throw std::runtime_error("mosquitto_passwd failed: " + result.output);
    }
    config += fmt::format("allow_anonymous false\npassword_file {}\n", password_file);
  } else {
    config += "allow_anonymous true\n";
  }
  if (options_.tls) {
    config += fmt::format("cafile {}\ncertfile {}\nkeyfile {}\n", options_.tls->ca_cert,
                          options_.tls->server_cert, options_.tls->server_key);
  }
  write_file(dir_.file("mosquitto.conf"), config, 0600);
  start();
}

Broker::~Broker() {
  stop();
}

void Broker::start() {
  if (process_) return;
  ProcessOptions process_options;
  process_options.log_file = log_file_;
  process_options.working_dir = dir_.path();
  process_.emplace(
      std::vector<std::string>{"/usr/sbin/mosquitto", "-c", dir_.file("mosquitto.conf")},
      process_options);
  if (!wait_for_port(port_, 10s) || !process_->running()) {
    std::string output = log();
    process_->stop();
    process_.reset();
    throw std::runtime_error(
        fmt::format("mosquitto did not listen on 127.0.0.1:{}:\n{}", port_, output));
  }
}

void Broker::stop() {
  if (!process_) return;
  process_->stop(10s);
  process_.reset();
}

std::string Broker::log() const {
  return read_file(log_file_);
}

TlsFiles Broker::make_tls_files(const TempDir& dir) {
  TlsFiles files;
  files.ca_cert = dir.file("ca.pem");
  files.ca_key = dir.file("ca.key");
  files.server_cert = dir.file("server.pem");
  files.server_key = dir.file("server.key");
  std::string csr = dir.file("server.csr");
  std::string ext = dir.file("server.ext");
  write_file(ext,
             "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
             "basicConstraints=CA:FALSE\n"
             "keyUsage=digitalSignature,keyEncipherment\n"
             "extendedKeyUsage=serverAuth\n");
  const std::string commands[] = {
      fmt::format("openssl req -x509 -newkey rsa:2048 -nodes -keyout {} -out {} -days 2 "
                  "-subj '/CN=provision-agent test CA'",
                  shell_quote(files.ca_key), shell_quote(files.ca_cert)),
      fmt::format("openssl req -newkey rsa:2048 -nodes -keyout {} -out {} -subj '/CN=localhost'",
                  shell_quote(files.server_key), shell_quote(csr)),
      fmt::format("openssl x509 -req -in {} -CA {} -CAkey {} -CAcreateserial -out {} -days 2 "
                  "-sha256 -extfile {}",
                  shell_quote(csr), shell_quote(files.ca_cert), shell_quote(files.ca_key),
                  shell_quote(files.server_cert), shell_quote(ext)),
  };
  for (const auto& command : commands) {
    auto result = run_command(command);
    if (result.exit_code != 0) {
      throw std::runtime_error(fmt::format("{} failed:\n{}", command, result.output));
    }
  }
  return files;
}

// ---------------------------------------------------------------------------------------------
// MqttClient

bool topic_matches(const std::string& topic_filter, const std::string& topic) {
  mqtt::init_library();
  bool result = false;
  if (mosquitto_topic_matches_sub(topic_filter.c_str(), topic.c_str(), &result) != MOSQ_ERR_SUCCESS)
    return false;
  return result;
}

MqttClient::MqttClient(int port, MqttClientOptions options) {
  client_id_ = options.client_id.empty() ? unique_name("pa-test-client-") : options.client_id;
  client_ = std::make_unique<mqtt::Client>(client_id_, options.clean_session, this);
  mosquitto* handle = client_->get();
  mosquitto_connect_callback_set(handle, &MqttClient::on_connect);
  mosquitto_subscribe_callback_set(handle, &MqttClient::on_subscribe);
  mosquitto_publish_callback_set(handle, &MqttClient::on_publish);
  mosquitto_message_callback_set(handle, &MqttClient::on_message);
  mosquitto_reconnect_delay_set(handle, 1, 2, false);
  mqtt::ConnectionSettings settings;
  settings.host = options.host;
  settings.port = port;
  settings.keepalive = 30;
  settings.user = options.username;
  settings.password = options.password;
  settings.tls = options.ca_file.has_value();
  settings.ca_file = options.ca_file;
  client_->configure(settings);
  int rc = client_->connect();
  if (rc == MOSQ_ERR_SUCCESS) rc = client_->start_network_thread();
  if (rc != MOSQ_ERR_SUCCESS)
    throw std::runtime_error(
        fmt::format("MQTT connect to {}:{}: {}", options.host, port, mosquitto_error(rc)));
  std::unique_lock lock(mutex_);
  if (!changed_.wait_for(lock, 10s, [this] { return connack_.has_value(); }) || *connack_ != 0) {
    int code = connack_.value_or(-1);
    lock.unlock();
    client_.reset();  // disconnects and stops the network thread
    throw std::runtime_error(
        fmt::format("MQTT connect to {}:{} refused or timed out (CONNACK {}: {})", options.host,
                    port, code, code >= 0 ? mosquitto_connack_string(code) : "none"));
  }
}

// The network thread stops before the state its callbacks write goes away.
MqttClient::~MqttClient() {
  client_.reset();
}

void MqttClient::on_connect(mosquitto*, void* self, int rc) {
  auto* client = static_cast<MqttClient*>(self);
  std::lock_guard lock(client->mutex_);
  client->connack_ = rc;
  client->changed_.notify_all();
}

void MqttClient::on_subscribe(mosquitto*, void* self, int mid, int, const int*) {
  auto* client = static_cast<MqttClient*>(self);
  std::lock_guard lock(client->mutex_);
  client->acked_mids_.push_back(mid);
  client->changed_.notify_all();
}

void MqttClient::on_publish(mosquitto*, void* self, int mid) {
  auto* client = static_cast<MqttClient*>(self);
  std::lock_guard lock(client->mutex_);
  client->acked_mids_.push_back(mid);
  client->changed_.notify_all();
}

void MqttClient::on_message(mosquitto*, void* self, const mosquitto_message* message) {
  auto* client = static_cast<MqttClient*>(self);
  Message copy;
  copy.topic = message->topic;
  if (message->payloadlen > 0) {
    copy.payload.assign(static_cast<const char*>(message->payload),
                        static_cast<std::size_t>(message->payloadlen));
  }
  copy.qos = message->qos;
  copy.retain = message->retain;
  std::lock_guard lock(client->mutex_);
  client->received_.push_back(std::move(copy));
  client->changed_.notify_all();
}

void MqttClient::subscribe(const std::string& topic_filter, std::chrono::milliseconds timeout) {
  int mid = 0;
  int rc = mosquitto_subscribe(client_->get(), &mid, topic_filter.c_str(), 1);
  if (rc != MOSQ_ERR_SUCCESS) {
    throw std::runtime_error(fmt::format("subscribe {}: {}", topic_filter, mosquitto_error(rc)));
  }
  std::unique_lock lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [&] {
        return std::find(acked_mids_.begin(), acked_mids_.end(), mid) != acked_mids_.end();
      })) {
    throw std::runtime_error(fmt::format("no SUBACK for {}", topic_filter));
  }
}

void MqttClient::publish(const std::string& topic, const std::string& payload, int qos, bool retain,
                         std::chrono::milliseconds timeout) {
  int mid = 0;
  int rc = mosquitto_publish(client_->get(), &mid, topic.c_str(), static_cast<int>(payload.size()),
                             payload.data(), qos, retain);
  if (rc != MOSQ_ERR_SUCCESS) {
    throw std::runtime_error(fmt::format("publish {}: {}", topic, mosquitto_error(rc)));
  }
  std::unique_lock lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [&] {
        return std::find(acked_mids_.begin(), acked_mids_.end(), mid) != acked_mids_.end();
      })) {
    throw std::runtime_error(fmt::format("publish {} was not acknowledged", topic));
  }
}

std::size_t MqttClient::count_matching(const std::string& topic_filter,
                                       const Predicate& predicate) const {
  std::size_t count = 0;
  for (const auto& message : received_) {
    if (topic_matches(topic_filter, message.topic) && (!predicate || predicate(message))) ++count;
  }
  return count;
}

std::optional<Message> MqttClient::wait_for(const std::string& topic_filter,
                                            std::chrono::milliseconds timeout,
                                            const Predicate& predicate) {
  std::unique_lock lock(mutex_);
  std::optional<Message> found;
  changed_.wait_for(lock, timeout, [&] {
    for (const auto& message : received_) {
      if (topic_matches(topic_filter, message.topic) && (!predicate || predicate(message))) {
        found = message;
        return true;
      }
    }
    return false;
  });
  return found;
}

bool MqttClient::wait_count(const std::string& topic_filter, std::size_t count,
                            std::chrono::milliseconds timeout, const Predicate& predicate) {
  std::unique_lock lock(mutex_);
  return changed_.wait_for(lock, timeout,
                           [&] { return count_matching(topic_filter, predicate) >= count; });
}

std::vector<Message> MqttClient::messages(const std::string& topic_filter) const {
  std::lock_guard lock(mutex_);
  std::vector<Message> result;
  for (const auto& message : received_) {
    if (topic_matches(topic_filter, message.topic)) result.push_back(message);
  }
  return result;
}

void MqttClient::clear() {
  std::lock_guard lock(mutex_);
  received_.clear();
}

// ---------------------------------------------------------------------------------------------
// JSON

rapidjson::Document parse_json(const std::string& text) {
  rapidjson::Document document;
  document.Parse(text.data(), text.size());
  return document;
}

std::string json_string(const rapidjson::Value& object, const char* name) {
  if (!object.IsObject()) return {};
  auto it = object.FindMember(name);
  if (it == object.MemberEnd() || !it->value.IsString()) return {};
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

bool json_has(const rapidjson::Value& object, const char* name) {
  return object.IsObject() && object.HasMember(name);
}

}  // namespace pa::test
