// pa_bench agent --agent PATH --plugins DIR [--devices 1000]: the figures of SPEC section 10 that
// need the whole daemon, measured on a real mosquitto on a free 127.0.0.1 port and the real
// provision-agent executable, each started by fork/exec and stopped by its PID:
//   start-up to subscribed, idle resident memory, end-to-end latency (sequential, ec-p256 and
//   rsa-2048), decode+dispatch throughput on the no-op path, bursts of distinct devices with 1
//   worker and with one per CPU, and the agent's CPU seconds per request.
// pa_bench spool --agent PATH --plugins DIR: what the intake spool costs, with it and without it
//   (PA_BENCH_UNSPOOLED=1), the state folder on disk and on tmpfs.
// Every wait is bounded; a phase that does not complete is reported and the exit status is 1.
#include <fmt/format.h>
#include <mosquitto.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "bench.hpp"
#include "intake/envelope.hpp"
#include "keystore/key_pair.hpp"
#include "mqtt/client.hpp"
#include "test_support.hpp"

namespace pa::bench {
namespace {

using namespace std::chrono_literals;
using test::Broker;
using test::Message;
using test::MqttClient;
using test::Process;
using test::ProcessOptions;
using test::TempDir;

// ---------------------------------------------------------------------------------------------
// What /proc says about the agent

// A "VmRSS:" style line of /proc/<pid>/status, in KiB; -1 when absent.
long proc_status_kib(pid_t pid, const std::string& field) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  }
  return -1;
}

struct CpuTime {
  double user = 0, system = 0;  // seconds
};

// utime and stime of a process (/proc/<pid>/stat fields 14 and 15, in clock ticks).
CpuTime cpu_time(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // The command name (field 2) may hold spaces; the fields after it start past its ')'.
  const auto close = stat.rfind(')');
  if (close == std::string::npos) throw std::runtime_error(fmt::format("no /proc/{}/stat", pid));
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  long utime = 0, stime = 0;
  for (int number = 3; fields >> field; ++number) {
    if (number == 14) utime = std::stol(field);
    if (number == 15) {
      stime = std::stol(field);
      break;
    }
  }
  const auto ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  return {static_cast<double>(utime) / ticks, static_cast<double>(stime) / ticks};
}

// The file system under `path`: the key store's fsyncs cost what it makes them cost.
std::string file_system_of(const std::string& path) {
  struct statfs info {};
  if (::statfs(path.c_str(), &info) != 0) return "unknown file system";
  const auto type = static_cast<std::uint32_t>(info.f_type);
  if (type == 0xEF53u) return "ext4";
  if (type == 0x01021994u) return "tmpfs";
  if (type == 0x9123683Eu) return "btrfs";
  if (type == 0x58465342u) return "xfs";
  if (type == 0x794C7630u) return "overlayfs";
  return fmt::format("file system type {:#x}", type);
}

// A scratch folder made with mkdtemp under `base` (not $TMPDIR: the spool bench chooses the file
// system), removed with its contents at the end.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& base) {
    std::string pattern = base + "/pa-bench-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr)
      throw std::runtime_error(fmt::format("mkdtemp {}: {}", pattern, std::strerror(errno)));
    path_ = pattern;
  }
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------------------------
// The bench's MQTT client

// Publishes without waiting for each PUBACK, stamps every message in the network thread when it
// arrives and counts per subscription. test::MqttClient waits for each PUBACK and rescans all it
// received at every arrival: right for tests, but quadratic over thousands of messages, work that
// would take the two cores from the agent being measured. TCP_NODELAY, so that the bench's own
// socket never holds a request back (Nagle) and the figures are the broker's and the agent's.
class BenchClient {
 public:
  struct Arrival {
    std::size_t filter = 0;  // index of the subscription it matched
    std::string topic;
    std::string payload;
    Clock::time_point at;
  };

  BenchClient(int port, std::vector<std::string> filters) : filters_(std::move(filters)) {
    counts_.assign(filters_.size(), 0);
    client_ = std::make_unique<mqtt::Client>(test::unique_name("pa-bench-client-"), true, this);
    mosquitto* handle = client_->get();
    mosquitto_connect_callback_set(handle, [](mosquitto*, void* self, int rc) {
      auto* me = static_cast<BenchClient*>(self);
      std::lock_guard lock(me->mutex_);
      me->connack_ = rc;
      me->changed_.notify_all();
    });
    mosquitto_subscribe_callback_set(handle, [](mosquitto*, void* self, int, int, const int*) {
      auto* me = static_cast<BenchClient*>(self);
      std::lock_guard lock(me->mutex_);
      ++me->subacks_;
      me->changed_.notify_all();
    });
    mosquitto_publish_callback_set(handle, [](mosquitto*, void* self, int) {
      auto* me = static_cast<BenchClient*>(self);
      std::lock_guard lock(me->mutex_);
      ++me->pubacks_;
      me->last_puback_ = Clock::now();
      me->changed_.notify_all();
    });
    mosquitto_message_callback_set(handle, &BenchClient::on_message);
    mqtt::ConnectionSettings settings;  // TCP_NODELAY is on by default
    settings.host = "127.0.0.1";
    settings.port = port;
    client_->configure(settings);
    int rc = client_->connect();
    if (rc == MOSQ_ERR_SUCCESS) rc = client_->start_network_thread();
    if (rc != MOSQ_ERR_SUCCESS)
      throw std::runtime_error(fmt::format("bench client: connect: {}", mosquitto_strerror(rc)));
    {
      std::unique_lock lock(mutex_);
      if (!changed_.wait_for(lock, 10s, [&] { return connack_.has_value(); }) || *connack_ != 0) {
        lock.unlock();
        close();
        throw std::runtime_error("bench client: no CONNACK");
      }
    }
    for (const auto& filter : filters_) {
      rc = mosquitto_subscribe(client_->get(), nullptr, filter.c_str(), 1);
      if (rc != MOSQ_ERR_SUCCESS) {
        close();
        throw std::runtime_error(
            fmt::format("bench client: subscribe: {}", mosquitto_strerror(rc)));
      }
    }
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, 10s, [&] { return subacks_ == filters_.size(); })) {
      lock.unlock();
      close();
      throw std::runtime_error("bench client: no SUBACK");
    }
  }
  ~BenchClient() { close(); }
  BenchClient(const BenchClient&) = delete;
  BenchClient& operator=(const BenchClient&) = delete;

  // QoS 1, queued in libmosquitto; the PUBACKs are counted as they come.
  void publish(const std::string& topic, const std::string& payload) {
    const int rc = mosquitto_publish(client_->get(), nullptr, topic.c_str(),
                                     static_cast<int>(payload.size()), payload.data(), 1, false);
    if (rc != MOSQ_ERR_SUCCESS)
      throw std::runtime_error(fmt::format("publish {}: {}", topic, mosquitto_strerror(rc)));
  }

  // Waits until `count` messages arrived on subscription `filter`; false after `timeout`.
  bool wait_count(std::size_t filter, std::size_t count, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, timeout, [&] { return counts_[filter] >= count; });
  }
  // The first arrival since the last clear() that satisfies `predicate`, waiting up to `timeout`.
  // For sequential use: it rescans what arrived since clear().
  template <class Predicate>
  std::optional<Arrival> wait_for(std::chrono::milliseconds timeout, Predicate predicate) {
    std::unique_lock lock(mutex_);
    std::optional<Arrival> found;
    changed_.wait_for(lock, timeout, [&] {
      for (const auto& arrival : arrivals_) {
        if (predicate(arrival)) {
          found = arrival;
          return true;
        }
      }
      return false;
    });
    return found;
  }
  // When the last PUBACK came, once `count` came in all (bounded).
  std::optional<Clock::time_point> wait_pubacks(std::size_t count,
                                                std::chrono::milliseconds timeout) {
    std::unique_lock lock(mutex_);
    if (!changed_.wait_for(lock, timeout, [&] { return pubacks_ >= count; })) return std::nullopt;
    return last_puback_;
  }
  std::size_t count(std::size_t filter) const {
    std::lock_guard lock(mutex_);
    return counts_[filter];
  }
  std::vector<Arrival> arrivals(std::size_t filter) const {
    std::lock_guard lock(mutex_);
    std::vector<Arrival> result;
    for (const auto& arrival : arrivals_)
      if (arrival.filter == filter) result.push_back(arrival);
    return result;
  }
  void clear() {
    std::lock_guard lock(mutex_);
    arrivals_.clear();
    counts_.assign(filters_.size(), 0);
  }

 private:
  static void on_message(mosquitto*, void* self, const mosquitto_message* message) {
    const auto at = Clock::now();
    // Retained messages (keys of earlier phases) come on subscribing; live ones are not retained.
    if (message->retain) return;
    auto* me = static_cast<BenchClient*>(self);
    for (std::size_t i = 0; i < me->filters_.size(); ++i) {
      bool matches = false;
      mosquitto_topic_matches_sub(me->filters_[i].c_str(), message->topic, &matches);
      if (!matches) continue;
      Arrival arrival{i, message->topic,
                      message->payloadlen > 0
                          ? std::string(static_cast<const char*>(message->payload),
                                        static_cast<std::size_t>(message->payloadlen))
                          : std::string(),
                      at};
      std::lock_guard lock(me->mutex_);
      me->arrivals_.push_back(std::move(arrival));
      ++me->counts_[i];
      me->changed_.notify_all();
      return;
    }
  }
  // Disconnects and stops the network thread before the state its callbacks write goes away.
  void close() { client_.reset(); }

  std::vector<std::string> filters_;
  std::unique_ptr<mqtt::Client> client_;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::optional<int> connack_;
  std::size_t subacks_ = 0;
  std::size_t pubacks_ = 0;
  Clock::time_point last_puback_;
  std::vector<std::size_t> counts_;
  std::vector<Arrival> arrivals_;
};

// ---------------------------------------------------------------------------------------------
// The bench

std::string last_lines(const std::string& text, std::size_t lines) {
  if (text.empty()) return "(nothing)";
  std::size_t at = text.size();
  while (lines-- > 0 && at > 0) {
    at = text.rfind('\n', at - 1);
    if (at == std::string::npos) return text;
  }
  return text.substr(at + 1);
}

std::string status_of(const std::string& payload) {
  const auto json = test::parse_json(payload);
  if (json.HasParseError() || !json.IsObject()) return "unparsable";
  const std::string status = test::json_string(json, "status");
  if (status == "ok") return status;
  auto error = json.FindMember("error");
  if (error != json.MemberEnd()) return status + ":" + test::json_string(error->value, "code");
  return status;
}

class AgentBench {
 public:
  explicit AgentBench(const AgentBenchOptions& options)
      : options_(options), cpus_(static_cast<int>(::sysconf(_SC_NPROCESSORS_ONLN))) {}

  int run() {
    fmt::print("== agent (load average {})\n", load_average());
    fmt::print("mosquitto on 127.0.0.1:{}, agent {}, plugins {}\n", broker_.port(), options_.agent,
               options_.plugins);
    fmt::print("key store and state under {} ({}; TMPDIR chooses where)\n", state_.path(),
               file_system_of(state_.path()));
    fmt::print("requests are plaintext (PROVISION_E2EE_POLICY=off) unless said; {} CPUs\n", cpus_);
    for (const auto& assignment : options_.agent_env)
      fmt::print("agent environment adds {}\n", assignment);
    fmt::print("CPU time is the agent's utime + stime from /proc/<pid>/stat ({} ticks a second)\n",
               ::sysconf(_SC_CLK_TCK));
    start_up_ = measure_start_up("");
    measure_main_instance();
    measure_bursts();
    measure_latency_without_broker_nagle();
    print_summary();
    fmt::print("(load average after: {})\n", load_average());
    return failures_ == 0 ? 0 : 1;
  }

  // Issue 13's figures, side by side in one run (SPEC section 10): latency with the key pool warm
  // and off (rsa-2048, rsa-4096), natively and, with --arm-agent, under qemu-arm; encrypted-request
  // throughput with 10 and with 10,000 devices in the key store; bursts of distinct devices with
  // 1 worker and with all workers.
  int run_speed() {
    fmt::print("== speed (load average {})\n", load_average());
    broker_.stop();
    std::ofstream(broker_.folder() + "/mosquitto.conf", std::ios::app) << "set_tcp_nodelay true\n";
    broker_.start();
    fmt::print("mosquitto on 127.0.0.1:{} with set_tcp_nodelay true, agent {}; {} CPUs\n",
               broker_.port(), options_.agent, cpus_);
    struct PoolRow {
      std::string machine, type;
      Figures warm, off;
    };
    std::vector<PoolRow> pool_rows;
    struct Machine {
      std::string label;
      std::vector<std::string> command;
      std::string plugins;
      int requests_2048, requests_4096;
    };
    std::vector<Machine> machines = {{"native",
                                      {options_.agent},
                                      options_.plugins,
                                      options_.latency_rsa,
                                      std::max(2, options_.latency_rsa / 2)}};
    if (!options_.arm_agent.empty())
      machines.push_back({"qemu-arm",
                          {qemu_arm(), options_.arm_agent},
                          options_.arm_plugins,
                          std::max(2, options_.latency_rsa / 2),
                          std::max(2, options_.latency_rsa / 4)});
    fmt::print(
        "latency with the key pool warm (PROVISION_KEY_POOL=2; each request waits until the pool\n"
        "is full again, read from the metrics file) and off (PROVISION_KEY_POOL=0; the same\n"
        "spacing), publish -> key at a subscriber:\n");
    for (const Machine& machine : machines) {
      command_ = machine.command;
      plugins_ = machine.plugins;
      for (const std::string type : {"rsa-2048", "rsa-4096"}) {
        PoolRow row{machine.label, type, {}, {}};
        const int count = type == "rsa-2048" ? machine.requests_2048 : machine.requests_4096;
        row.warm = measure_pool_latency(type, 2, count, machine.label);
        row.off = measure_pool_latency(type, 0, count, machine.label);
        pool_rows.push_back(row);
      }
    }
    command_.clear();
    plugins_.clear();

    fmt::print(
        "encrypted-request throughput by key store size: publish_key encrypted to the agent key\n"
        "for devices without keys (answered not_found), so each request looks the device up in\n"
        "the store (SPEC 4), then decrypts with the agent key; every stored device in a user\n"
        "folder of its own, the worst case for a listing of the store:\n");
    std::vector<std::pair<int, Throughput>> store_rows;
    std::vector<std::pair<int, double>> store_start_ms;
    for (int devices : {10, options_.store_devices}) {
      ScratchDir scratch(state_.path());
      fill_store(scratch.path() + "/keys", devices);
      const std::string client_id = test::unique_name("pa-bench-store-");
      MqttClient watcher(broker_.port());
      watcher.subscribe(fmt::format("provision/agents/{}/status", client_id));
      const auto start = Clock::now();
      Process agent = start_agent(client_id, {{"PROVISION_KEYS_DIR", scratch.path() + "/keys"},
                                              {"STATE_DIRECTORY", scratch.path() + "/state"},
                                              {"PROVISION_KEY_POOL", "0"}});
      const Message online = wait_online(watcher, agent, client_id);
      store_start_ms.emplace_back(devices, ms_between(start, Clock::now()));
      const std::string agent_key =
          test::json_string(test::parse_json(online.payload), "public_key");
      store_rows.emplace_back(
          devices, measure_noop(agent, fmt::format("encrypted, {} devices in the store", devices),
                                std::max(1, options_.noop / 4), false, agent_key));
      stop_agent(agent, "store");
    }

    measure_bursts();

    fmt::print("summary (agent {})\n", options_.agent);
    fmt::print("  {:<9} {:<9} {:>22} {:>22} {:>8}\n", "machine", "key type", "pool warm p50 (p99)",
               "pool off p50 (p99)", "off/warm");
    for (const PoolRow& row : pool_rows)
      fmt::print("  {:<9} {:<9} {:>11.1f} ms ({:>6.1f}) {:>11.1f} ms ({:>6.1f}) {:>7.1f}x\n",
                 row.machine, row.type, row.warm.median, row.warm.p99, row.off.median, row.off.p99,
                 row.warm.median > 0 ? row.off.median / row.warm.median : 0.0);
    // The native rows come first, then the qemu-arm ones in the same order.
    const std::size_t native_rows = pool_rows.size() / machines.size();
    for (std::size_t i = 0; machines.size() == 2 && i < native_rows; ++i) {
      const PoolRow& native = pool_rows[i];
      const PoolRow& arm = pool_rows[i + native_rows];
      auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
      fmt::print("  qemu-arm / native, {}: pool warm x{:.1f}, pool off x{:.1f}\n", native.type,
                 ratio(arm.warm.median, native.warm.median),
                 ratio(arm.off.median, native.off.median));
    }
    for (std::size_t i = 0; i < store_rows.size(); ++i)
      fmt::print(
          "  {:>6} devices in the store: {:.0f} encrypted requests/s, {:.3f} ms agent CPU per "
          "request; start-up to subscribed {:.0f} ms\n",
          store_rows[i].first, store_rows[i].second.per_second(),
          store_rows[i].second.cpu_ms_per_request(), store_start_ms[i].second);
    for (const auto& burst : bursts_)
      fmt::print("  burst of {}, {}: {:.0f} requests/s, {:.3f} ms agent CPU per request\n",
                 burst.requests, burst.label, burst.per_second(), burst.cpu_ms_per_request());
    fmt::print("(load average after: {})\n", load_average());
    return failures_ == 0 ? 0 : 1;
  }

  // What the intake spool costs (SPEC sections 3.4 and 10): the same phases with the spool and
  // with PA_BENCH_UNSPOOLED=1 (undocumented: no spool writes), with the state folder and key
  // store on disk and on tmpfs, one fresh agent each.
  int run_spool() {
    fmt::print("== spool (load average {})\n", load_average());
    fmt::print("mosquitto on 127.0.0.1:{}, agent {}, plugins {}; {} CPUs\n", broker_.port(),
               options_.agent, options_.plugins, cpus_);
    fmt::print(
        "each request is fdatasync'ed into the spool on the agent's network thread before its\n"
        "PUBACK; a key change also records its intent (fdatasync) first. Without the spool both\n"
        "are skipped; the key store and the request ledger write as always.\n");
    // Latency is the agent's, not Nagle's at the broker (see measure_latency_without_broker_nagle).
    broker_.stop();
    std::ofstream(broker_.folder() + "/mosquitto.conf", std::ios::app) << "set_tcp_nodelay true\n";
    broker_.start();
    fmt::print("the broker runs with set_tcp_nodelay true\n");
    struct Place {
      std::string label;
      std::string base;
    };
    struct Row {
      std::string place;
      bool spooled = false;
      Throughput burst, noop;
      Figures latency;
    };
    std::vector<Row> rows;
    for (const Place& place :
         {Place{"disk", options_.spool_disk}, Place{"tmpfs", options_.spool_tmpfs}}) {
      ScratchDir scratch(place.base);
      fmt::print("-- state folder and key store under {} ({})\n", scratch.path(),
                 file_system_of(scratch.path()));
      for (const bool spooled : {true, false}) {
        Row row;
        row.place = place.label;
        row.spooled = spooled;
        const std::string label =
            fmt::format("{}, {}", place.label, spooled ? "spool" : "no spool");
        const std::string client_id = test::unique_name("pa-bench-spool-");
        const std::string folder = scratch.path() + "/" + client_id;
        std::map<std::string, std::string> extra = {{"STATE_DIRECTORY", folder + "/state"},
                                                    {"PROVISION_KEYS_DIR", folder + "/keys"}};
        if (!spooled) extra["PA_BENCH_UNSPOOLED"] = "1";
        MqttClient watcher(broker_.port());
        watcher.subscribe(fmt::format("provision/agents/{}/status", client_id));
        Process agent = start_agent(client_id, extra);
        wait_online(watcher, agent, client_id);
        std::vector<std::pair<std::string, std::string>> requests;
        const std::string prefix = test::unique_name("spool-burst-");
        for (int i = 0; i < options_.devices; ++i) {
          const std::string device = fmt::format("{}-{}", prefix, i);
          requests.emplace_back(fmt::format("provision/{}/request", device),
                                fmt::format(R"({{"request_id":"{}-r"}})", device));
        }
        row.burst =
            run_burst(agent, label + ", burst of generate_and_publish_key", requests, "ok", 600s);
        row.noop = measure_noop(agent, label + ", publish_key answered not_found", options_.noop,
                                false, {});
        row.latency = measure_latency(agent, "ec-p256", options_.latency, ", " + label);
        stop_agent(agent, label);
        rows.push_back(std::move(row));
      }
    }
    fmt::print("summary: what the spool costs ({} devices a burst, {} sequential requests)\n",
               options_.devices, options_.latency);
    fmt::print("  {:<7} {:<9} {:>16} {:>16} {:>14}\n", "place", "spool", "generate req/s",
               "no-op req/s", "latency p50");
    for (const Row& row : rows)
      fmt::print("  {:<7} {:<9} {:>16.0f} {:>16.0f} {:>11.2f} ms\n", row.place,
                 row.spooled ? "on" : "off", row.burst.per_second(), row.noop.per_second(),
                 row.latency.median);
    for (std::size_t i = 0; i + 1 < rows.size(); i += 2) {
      const Row& on = rows[i];
      const Row& off = rows[i + 1];
      auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
      fmt::print(
          "  {}: with the spool, generate throughput x{:.2f}, no-op throughput x{:.2f}, p50 "
          "latency {:+.2f} ms\n",
          on.place, ratio(on.burst.per_second(), off.burst.per_second()),
          ratio(on.noop.per_second(), off.noop.per_second()),
          on.latency.median - off.latency.median);
    }
    fmt::print("(load average after: {})\n", load_average());
    return failures_ == 0 ? 0 : 1;
  }

 private:
  // The agent with the bench's configuration plus `extra` (clean environment: nothing of the
  // caller's, such as JOURNAL_STREAM or NOTIFY_SOCKET, leaks in).
  Process start_agent(const std::string& client_id, std::map<std::string, std::string> extra = {}) {
    ProcessOptions process;
    process.clean_env = true;
    process.log_file = state_.file(client_id + ".log");
    process.env = {
        {"MQTT_HOST", "127.0.0.1"},
        {"MQTT_PORT", std::to_string(broker_.port())},
        {"MQTT_CLIENT_ID", client_id},
        {"PROVISION_KEYS_DIR", state_.file("sensor_keys")},
        {"PROVISION_PLUGIN_DIR", plugins_.empty() ? options_.plugins : plugins_},
        {"PROVISION_E2EE_POLICY", "off"},
        {"PROVISION_KEY_TYPE", "ec-p256"},
        // Room for every burst at once: `busy` answers would measure the limit, not the agent.
        {"PROVISION_QUEUE_MAX", std::to_string(2 * std::max(options_.devices, options_.noop))},
    };
    for (auto& [name, value] : extra) process.env[name] = value;
    for (const auto& assignment : options_.agent_env) {
      const auto equals = assignment.find('=');
      if (equals == std::string::npos || equals == 0)
        throw std::invalid_argument("--agent-env expects NAME=VALUE, not " + assignment);
      process.env[assignment.substr(0, equals)] = assignment.substr(equals + 1);
    }
    return Process(command_.empty() ? std::vector<std::string>{options_.agent} : command_, process);
  }

  // Waits for the agent's retained online status as a subscriber sees it; the message, or throws
  // with the end of the agent's log.
  Message wait_online(MqttClient& watcher, Process& agent, const std::string& client_id) {
    const std::string topic = fmt::format("provision/agents/{}/status", client_id);
    auto online = watcher.wait_for(topic, 30s, [](const Message& message) {
      return test::json_string(test::parse_json(message.payload), "status") == "online";
    });
    if (!online) {
      throw std::runtime_error(fmt::format("agent {} did not come online within 30 s; its log:\n{}",
                                           client_id, last_lines(agent.log(), 20)));
    }
    return *online;
  }

  void stop_agent(Process& agent, const std::string& what) {
    const int status = agent.stop(15s);
    if (status != 0) {
      fmt::print("  note: the agent ({}) exited with status {}; its log ends:\n{}\n", what, status,
                 last_lines(agent.log(), 10));
    }
  }

  void fail(const std::string& what) {
    ++failures_;
    fmt::print("  INCOMPLETE: {}\n", what);
  }

  // Process start (just before fork) to the retained {"status":"online"} at a subscriber, which
  // the agent publishes once its subscriptions are acknowledged. The first start of the run also
  // generates the RSA-2048 agent key (SPEC section 4), so it is reported on its own; then
  // `starts` restarts with the same client id (the persistent session resumed), as on a Pi.
  Figures measure_start_up(const std::string& label) {
    const std::string client_id = test::unique_name("pa-bench-start-");
    MqttClient watcher(broker_.port());
    watcher.subscribe(fmt::format("provision/agents/{}/status", client_id));
    const bool first_of_run = !test::file_exists(state_.file("agent_private.pem"));
    std::vector<double> ms;
    double first_ms = 0;
    for (int i = 0; i <= options_.starts; ++i) {
      watcher.clear();
      const auto start = Clock::now();
      Process agent = start_agent(client_id);
      wait_online(watcher, agent, client_id);
      const double elapsed = ms_between(start, Clock::now());
      if (i == 0) {
        first_ms = elapsed;
      } else {
        ms.push_back(elapsed);
      }
      stop_agent(agent, "start-up");
    }
    const Figures f = summarize(ms);
    fmt::print(
        "start-up to subscribed{} (process start -> retained online status at a "
        "subscriber)\n",
        label);
    fmt::print("  first start{}:  {:.1f} ms\n",
               first_of_run ? ", generating the agent key" : " of a new client id", first_ms);
    fmt::print("  {} restarts: median {:.1f} ms (each: {:.1f})\n", ms.size(), f.median,
               fmt::join(ms, ", "));
    return f;
  }

  void measure_main_instance() {
    const std::string client_id = test::unique_name("pa-bench-main-");
    MqttClient watcher(broker_.port());
    watcher.subscribe(fmt::format("provision/agents/{}/status", client_id));
    Process agent = start_agent(client_id);
    const Message online = wait_online(watcher, agent, client_id);
    agent_public_key_ = test::json_string(test::parse_json(online.payload), "public_key");

    std::this_thread::sleep_for(2s);
    idle_rss_kib_ = proc_status_kib(agent.pid(), "VmRSS");
    fmt::print(
        "idle resident memory (VmRSS, subscribed and idle 2 s, {} workers): {} KiB "
        "({:.1f} MiB)\n",
        cpus_, idle_rss_kib_, static_cast<double>(idle_rss_kib_) / 1024.0);

    latency_ec_ = measure_latency(agent, "ec-p256", options_.latency, "");
    latency_rsa_ = measure_latency(agent, "rsa-2048", options_.latency_rsa, "");

    // The no-op path: publish_key for devices that have no keys is answered not_found by the
    // keygen plugin without generating anything, so this is decode + dispatch + respond.
    noop_plain_ = measure_noop(agent, "plaintext, no request_id", options_.noop, false, {});
    // A request_id is remembered for replay protection, in a journal fdatasync'ed per request.
    noop_ids_ = measure_noop(agent, "plaintext with request_id (replay journal)",
                             std::max(1, options_.noop / 4), true, {});
    // Encrypted to the agent key: + the search for the device's keys (SPEC section 4), PEM
    // parse, RSA-OAEP unwrap and AES-EAX per request.
    noop_encrypted_ = measure_noop(agent, encrypted_label(), std::max(1, options_.noop / 4), false,
                                   agent_public_key_);

    const long rss = proc_status_kib(agent.pid(), "VmRSS");
    const long hwm = proc_status_kib(agent.pid(), "VmHWM");
    fmt::print("resident memory after the phases above: VmRSS {} KiB, peak (VmHWM) {} KiB\n", rss,
               hwm);
    stop_agent(agent, "main");
  }

  // `count` sequential generate_and_publish_key requests of the agent's default type `type` with
  // PROVISION_KEY_POOL=`pool`; before each, the pool is full again (the metrics file says so), and
  // a pause lets the agent settle either way.
  Figures measure_pool_latency(const std::string& type, int pool, int count,
                               const std::string& machine) {
    ScratchDir scratch(state_.path());
    const std::string metrics = scratch.path() + "/agent.prom";
    const std::string client_id = test::unique_name("pa-bench-pool-");
    MqttClient watcher(broker_.port());
    watcher.subscribe(fmt::format("provision/agents/{}/status", client_id));
    Process agent = start_agent(client_id, {{"PROVISION_KEYS_DIR", scratch.path() + "/keys"},
                                            {"STATE_DIRECTORY", scratch.path() + "/state"},
                                            {"PROVISION_KEY_TYPE", type},
                                            {"PROVISION_KEY_POOL", std::to_string(pool)},
                                            {"PROVISION_METRICS_FILE", metrics}});
    wait_online(watcher, agent, client_id);
    BenchClient client(broker_.port(), {"keys/+/public", "provision/+/response"});
    std::vector<double> ms;
    const std::string prefix = test::unique_name("pool-" + type + "-");
    for (int i = 0; i < count; ++i) {
      if (!wait_pool_full(metrics, pool, i, 600s)) {
        fail(fmt::format("{} {} pool {}: the pool did not fill up", machine, type, pool));
        break;
      }
      std::this_thread::sleep_for(200ms);
      const std::string device = fmt::format("{}-{}", prefix, i);
      const std::string key_topic = fmt::format("keys/{}/public", device);
      const std::string response_topic = fmt::format("provision/{}/response", device);
      client.clear();
      const auto start = Clock::now();
      client.publish(fmt::format("provision/{}/request", device),
                     fmt::format(R"({{"request_id":"{}-r"}})", device));
      auto key = client.wait_for(600s, [&](const BenchClient::Arrival& arrival) {
        return arrival.topic == key_topic ||
               (arrival.topic == response_topic && status_of(arrival.payload) != "ok");
      });
      if (!key || key->topic != key_topic) {
        fail(fmt::format("{} {} pool {}: request {} got {}", machine, type, pool, i,
                         key ? key->payload : std::string("nothing")));
        break;
      }
      ms.push_back(ms_between(start, key->at));
    }
    stop_agent(agent, "pool");  // its last metrics write
    const std::string hits = metric_line(metrics, "provision_agent_key_pool_hits_total");
    const Figures f = summarize(ms);
    fmt::print(
        "  {} {} pool {}: p50 {:.1f} ms, p99 {:.1f} ms (min {:.1f}, max {:.1f}; {} requests, "
        "pool hits {})\n",
        machine, type, pool == 0 ? "off " : "warm", f.median, f.p99, f.min, f.max, f.count, hits);
    return f;
  }

  // qemu-user's ARM emulator, found on PATH (the agent is started with execve, which does not
  // search it).
  static std::string qemu_arm() {
    const char* path = std::getenv("PATH");
    std::istringstream folders(path ? path : "/usr/bin:/bin");
    std::string folder;
    while (std::getline(folders, folder, ':'))
      if (!folder.empty() && ::access((folder + "/qemu-arm").c_str(), X_OK) == 0)
        return folder + "/qemu-arm";
    throw std::runtime_error("--arm-agent needs qemu-arm (Debian package qemu-user)");
  }

  // The value of `series` in a metrics file ("?" when absent).
  static std::string metric_line(const std::string& path, const std::string& series) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line))
      if (line.rfind(series + " ", 0) == 0) return line.substr(series.size() + 1);
    return "?";
  }

  // Whether the metrics file shows the pool full after `taken` hits (so it was written after the
  // last request took its pair), within `timeout`.
  static bool wait_pool_full(const std::string& metrics, int pool, int taken,
                             std::chrono::seconds timeout) {
    if (pool == 0) return true;
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      if (metric_line(metrics, "provision_agent_key_pool_keys") == std::to_string(pool) &&
          metric_line(metrics, "provision_agent_key_pool_hits_total") == std::to_string(taken))
        return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  }

  // A key store of `devices` pairs, each in a user folder of its own (<root>/u<i>/d<i>), written
  // directly (one ec-p256 pair for all): the shape whose listing cost grew with its size.
  static void fill_store(const std::string& root, int devices) {
    const keystore::KeyPair pair = keystore::generate_key_pair(keystore::KeyType::ec_p256);
    auto folder = [](const std::string& path) {
      if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
        throw std::runtime_error(fmt::format("mkdir {}: {}", path, std::strerror(errno)));
    };
    folder(root);
    for (int i = 0; i < devices; ++i) {
      const std::string user = fmt::format("{}/u{}", root, i);
      const std::string device = fmt::format("{}/d{}", user, i);
      folder(user);
      folder(device);
      test::write_file(device + "/sensor_private.pem", pair.private_pem, 0600);
      test::write_file(device + "/sensor_public.pem", pair.public_pem, 0644);
    }
  }

  // Sequential requests for distinct devices: publish to the key's arrival on keys/<D>/public at
  // a subscriber (stamped in its network thread). The next request goes once the response came.
  Figures measure_latency(Process& agent, const std::string& key_type, int count,
                          const std::string& label) {
    BenchClient client(broker_.port(), {"keys/+/public", "provision/+/response"});
    std::vector<double> ms;
    const std::string prefix = test::unique_name("lat-" + key_type + "-");
    for (int i = 0; i < count; ++i) {
      const std::string device = fmt::format("{}-{}", prefix, i);
      const std::string payload = fmt::format(
          R"({{"device_id":"{}","action":"generate_and_publish_key","key_type":"{}","request_id":"{}-r"}})",
          device, key_type, device);
      const std::string key_topic = fmt::format("keys/{}/public", device);
      const std::string response_topic = fmt::format("provision/{}/response", device);
      client.clear();
      const auto start = Clock::now();
      client.publish(fmt::format("provision/{}/request", device), payload);
      // The key, or an error response that means no key will come.
      auto key = client.wait_for(30s, [&](const BenchClient::Arrival& arrival) {
        return arrival.topic == key_topic ||
               (arrival.topic == response_topic && status_of(arrival.payload) != "ok");
      });
      if (!key || key->topic != key_topic) {
        fail(fmt::format("latency {}: request {} got {}", key_type, i,
                         key ? key->payload : std::string("nothing in 30 s")));
        if (!agent.running()) throw std::runtime_error("the agent died:\n" + agent.log());
        break;
      }
      ms.push_back(ms_between(start, key->at));
      client.wait_for(30s, [&](const BenchClient::Arrival& arrival) {
        return arrival.topic == response_topic;
      });
    }
    const Figures f = summarize(ms);
    fmt::print(
        "end-to-end latency, {} sequential requests, {}{} (publish -> key at subscriber):\n"
        "  p50 {:.2f} ms, p99 {:.2f} ms (min {:.2f}, p90 {:.2f}, max {:.2f})\n",
        f.count, key_type, label, f.median, f.p99, f.min, f.p90, f.max);
    return f;
  }

  struct Throughput {
    std::string label;
    int requests = 0;
    double seconds = 0;          // first publish -> last response
    double publish_seconds = 0;  // first publish -> last PUBACK
    double cpu_seconds = 0;      // the agent's utime + stime over the phase
    double system_seconds = 0;   // of which stime
    bool complete = false;
    double per_second() const { return seconds > 0 ? requests / seconds : 0; }
    double cpu_ms_per_request() const { return requests > 0 ? 1000 * cpu_seconds / requests : 0; }
  };

  // `count` requests published back to back, then every response awaited (bounded); `expected`
  // is the status every response should have.
  Throughput run_burst(Process& agent, const std::string& label,
                       const std::vector<std::pair<std::string, std::string>>& requests,
                       const std::string& expected, std::chrono::seconds timeout) {
    BenchClient client(broker_.port(), {"provision/+/response", "keys/+/public"});
    Throughput result;
    result.label = label;
    result.requests = static_cast<int>(requests.size());
    const CpuTime cpu_before = cpu_time(agent.pid());
    const auto start = Clock::now();
    for (const auto& [topic, payload] : requests) client.publish(topic, payload);
    const bool complete = client.wait_count(0, requests.size(), timeout);
    const auto last_puback = client.wait_pubacks(requests.size(), 5s);
    // Read once the last response is in: the burst's work is done (a log line the agent may
    // still be writing falls outside).
    const CpuTime cpu_after = cpu_time(agent.pid());
    const auto responses = client.arrivals(0);
    result.complete = complete;
    if (!responses.empty()) {
      Clock::time_point last = responses.front().at;
      for (const auto& arrival : responses) last = std::max(last, arrival.at);
      result.seconds = ms_between(start, last) / 1000.0;
    }
    if (last_puback) result.publish_seconds = ms_between(start, *last_puback) / 1000.0;
    result.system_seconds = cpu_after.system - cpu_before.system;
    result.cpu_seconds = cpu_after.user - cpu_before.user + result.system_seconds;

    std::map<std::string, int> outcomes;
    for (const auto& arrival : responses) ++outcomes[status_of(arrival.payload)];
    std::string tally;
    for (const auto& [status, n] : outcomes) tally += fmt::format(" {}={}", status, n);
    fmt::print(
        "  {}: {} requests in {:.3f} s = {:.0f} requests/s; agent CPU {:.2f} s ({:.2f} s "
        "system) = {:.3f} ms per request\n",
        label, result.requests, result.seconds, result.per_second(), result.cpu_seconds,
        result.system_seconds, result.cpu_ms_per_request());
    fmt::print("    all published (last PUBACK) after {:.3f} s; responses:{}; keys published: {}\n",
               result.publish_seconds, tally.empty() ? " none" : tally, client.count(1));
    if (!complete) {
      fail(fmt::format("{}: {} of {} responses within {} s", label, responses.size(),
                       requests.size(), timeout.count()));
      if (!agent.running()) throw std::runtime_error("the agent died:\n" + agent.log());
    } else if (outcomes[expected] != result.requests) {
      fail(fmt::format("{}: not every response was {}", label, expected));
    }
    return result;
  }

  Throughput measure_noop(Process& agent, const std::string& label, int count, bool request_ids,
                          const std::string& encrypt_to) {
    if (!noop_header_printed_) {
      fmt::print(
          "decode + dispatch throughput on the no-op path: publish_key for devices without\n"
          "keys, answered not_found by the keygen plugin without key generation (a no-op\n"
          "plugin module would be a second target in bench/), published back to back:\n");
      noop_header_printed_ = true;
    }
    // Every payload is made before the clock starts.
    std::vector<std::pair<std::string, std::string>> requests;
    const std::string prefix = test::unique_name("noop-");
    for (int i = 0; i < count; ++i) {
      const std::string device = fmt::format("{}-{}", prefix, i);
      std::string payload =
          request_ids
              ? fmt::format(R"({{"device_id":"{}","action":"publish_key","request_id":"{}-r"}})",
                            device, device)
              : fmt::format(R"({{"device_id":"{}","action":"publish_key"}})", device);
      if (!encrypt_to.empty())
        payload = e2ee::envelope_json(e2ee::seal_envelope(payload, encrypt_to));
      requests.emplace_back(fmt::format("provision/{}/request", device), std::move(payload));
    }
    return run_burst(agent, label, requests, "error:not_found", 300s);
  }

  // Bursts of generate_and_publish_key (ec-p256) for distinct devices, one fresh agent per worker
  // count; CPU seconds per request from the agent's utime + stime around the burst.
  void measure_bursts() {
    fmt::print(
        "burst throughput, {} distinct devices, generate_and_publish_key ec-p256, from the\n"
        "first publish to the last response (a key written to disk and published for each):\n",
        options_.devices);
    for (int workers : {1, cpus_}) {
      const std::string client_id = test::unique_name(fmt::format("pa-bench-w{}-", workers));
      MqttClient watcher(broker_.port());
      watcher.subscribe(fmt::format("provision/agents/{}/status", client_id));
      Process agent = start_agent(client_id, {{"PROVISION_WORKERS", std::to_string(workers)}});
      wait_online(watcher, agent, client_id);
      std::this_thread::sleep_for(1s);
      std::vector<std::pair<std::string, std::string>> requests;
      const std::string prefix = test::unique_name(fmt::format("burst-w{}-", workers));
      for (int i = 0; i < options_.devices; ++i) {
        const std::string device = fmt::format("{}-{}", prefix, i);
        requests.emplace_back(
            fmt::format("provision/{}/request", device),
            fmt::format(
                R"({{"device_id":"{}","action":"generate_and_publish_key","request_id":"{}-r"}})",
                device, device));
      }
      bursts_.push_back(
          run_burst(agent, fmt::format("PROVISION_WORKERS={}", workers), requests, "ok", 600s));
      if (workers == cpus_) {
        // The decrypt path once more, now that the key store holds the bursts' devices too.
        noop_encrypted_full_ = measure_noop(
            agent, encrypted_label(), std::max(1, options_.noop / 4), false, agent_public_key_);
      }
      stop_agent(agent, bursts_.back().label);
      if (cpus_ == 1) break;
    }
  }

  // The decrypt path lists the key store root for user folders holding the device (SPEC section
  // 4), so its cost may grow with the number of folders there.
  std::string encrypted_label() const {
    std::size_t folders = 0;
    std::error_code error;
    for (std::filesystem::directory_iterator it(state_.file("sensor_keys"), error), end;
         !error && it != end; it.increment(error))
      ++folders;
    return fmt::format("encrypted to agent key, {} key store folders", folders);
  }

  // mosquitto's set_tcp_nodelay is off by default (and in the tests' broker), and libmosquitto
  // clients leave Nagle's algorithm on unless told: then a small packet that follows another on
  // the same socket waits for the peer's delayed ACK (40 ms on Linux). Start-up and ec-p256
  // latency once more with the broker's Nagle off tell the broker's share from the agent's.
  void measure_latency_without_broker_nagle() {
    broker_.stop();
    std::ofstream(broker_.folder() + "/mosquitto.conf", std::ios::app) << "set_tcp_nodelay true\n";
    broker_.start();
    fmt::print(
        "the broker again, with set_tcp_nodelay true (mosquitto's default is false): what\n"
        "changes is time spent waiting on Nagle's algorithm and delayed ACKs at the broker\n");
    start_up_broker_nodelay_ = measure_start_up(", broker with set_tcp_nodelay true");
    const std::string client_id = test::unique_name("pa-bench-nodelay-");
    MqttClient watcher(broker_.port());
    watcher.subscribe(fmt::format("provision/agents/{}/status", client_id));
    Process agent = start_agent(client_id);
    wait_online(watcher, agent, client_id);
    latency_ec_broker_nodelay_ =
        measure_latency(agent, "ec-p256", options_.latency, ", broker with set_tcp_nodelay true");
    stop_agent(agent, "broker without Nagle");
  }

  void print_summary() {
    auto line = [](const std::string& what, const std::string& figure) {
      fmt::print("  {:<56} {}\n", what, figure);
    };
    auto latency = [](const Figures& f) {
      return fmt::format("p50 {:.2f} ms, p99 {:.2f} ms ({} requests)", f.median, f.p99, f.count);
    };
    auto rate = [](const Throughput& t) {
      return fmt::format("{:.0f} requests/s, {:.3f} ms agent CPU per request", t.per_second(),
                         t.cpu_ms_per_request());
    };
    fmt::print("summary (agent {})\n", options_.agent);
    line("idle resident memory (VmRSS)", fmt::format("{:.1f} MiB", idle_rss_kib_ / 1024.0));
    line(fmt::format("start-up to subscribed, median of {}", start_up_.count),
         fmt::format("{:.1f} ms", start_up_.median));
    line("end-to-end latency ec-p256", latency(latency_ec_));
    line("end-to-end latency rsa-2048", latency(latency_rsa_));
    for (const auto& burst : bursts_)
      line(fmt::format("burst of {}, {}", burst.requests, burst.label), rate(burst));
    if (bursts_.size() == 2 && bursts_[0].per_second() > 0)
      line(fmt::format("burst speed-up, {} workers over 1", cpus_),
           fmt::format("{:.2f}x", bursts_[1].per_second() / bursts_[0].per_second()));
    for (const Throughput* noop :
         {&noop_plain_, &noop_ids_, &noop_encrypted_, &noop_encrypted_full_})
      line(fmt::format("no-op path, {}", noop->label), rate(*noop));
    line("with the broker's set_tcp_nodelay true: start-up",
         fmt::format("{:.1f} ms", start_up_broker_nodelay_.median));
    line("with the broker's set_tcp_nodelay true: latency ec-p256",
         latency(latency_ec_broker_nodelay_));
  }

  const AgentBenchOptions& options_;
  std::vector<std::string> command_;  // the agent's command when not options_.agent (qemu-arm)
  std::string plugins_;               // and its plugin folder
  const int cpus_;
  TempDir state_;
  Broker broker_;
  int failures_ = 0;
  bool noop_header_printed_ = false;
  Figures start_up_, latency_ec_, latency_rsa_, start_up_broker_nodelay_,
      latency_ec_broker_nodelay_;
  long idle_rss_kib_ = 0;
  std::string agent_public_key_;
  Throughput noop_plain_, noop_ids_, noop_encrypted_, noop_encrypted_full_;
  std::vector<Throughput> bursts_;
};

}  // namespace

namespace {

// The agent runs with the bench's working folder, but absolute paths read better in the report.
AgentBenchOptions with_absolute_paths(const AgentBenchOptions& options) {
  AgentBenchOptions absolute = options;
  absolute.agent = std::filesystem::absolute(options.agent).lexically_normal().string();
  absolute.plugins = std::filesystem::absolute(options.plugins).lexically_normal().string();
  return absolute;
}

}  // namespace

int run_agent(const AgentBenchOptions& options) {
  const AgentBenchOptions absolute = with_absolute_paths(options);
  AgentBench bench(absolute);
  return bench.run();
}

int run_speed(const AgentBenchOptions& options) {
  AgentBenchOptions absolute = with_absolute_paths(options);
  if (!options.arm_agent.empty()) {
    absolute.arm_agent = std::filesystem::absolute(options.arm_agent).lexically_normal().string();
    absolute.arm_plugins =
        std::filesystem::absolute(options.arm_plugins).lexically_normal().string();
  }
  AgentBench bench(absolute);
  return bench.run_speed();
}

int run_spool(const AgentBenchOptions& options) {
  const AgentBenchOptions absolute = with_absolute_paths(options);
  AgentBench bench(absolute);
  return bench.run_spool();
}

}  // namespace pa::bench
