// pa_bench fleet (SPEC sections 3.6 and 10): a simulated fleet of agents, each its own process
// with its own client id, key store and state folder, on one mosquitto on 127.0.0.1. The broker
// is restarted (with persistence, so the sessions survive it) and the bench reports how the
// reconnects spread over time (the broker's own log of connections, per second), how long until
// every agent is subscribed again (its online status, published after the SUBACK), whether the
// requests published while the agents were still away were all served, and memory per agent.
// Then two agents forced onto one client id: how long until both report the conflict.
#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include "bench.hpp"
#include "test_support.hpp"

namespace pa::bench {
namespace {

using namespace std::chrono_literals;
using test::Broker;
using test::BrokerOptions;
using test::Message;
using test::MqttClient;
using test::Process;
using test::ProcessOptions;
using test::TempDir;

long proc_kib(pid_t pid, const std::string& file, const std::string& field) {
  std::ifstream in(fmt::format("/proc/{}/{}", pid, file));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field + ":", 0) == 0) return std::stol(line.substr(field.size() + 1));
  return -1;
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool is_online(const Message& message) {
  return test::json_string(test::parse_json(message.payload), "status") == "online";
}

class Fleet {
 public:
  explicit Fleet(const FleetBenchOptions& options)
      : options_(options), broker_(BrokerOptions{true, std::nullopt, std::nullopt}) {}

  int run() {
    fmt::print("== fleet: {} agents on one mosquitto (127.0.0.1:{}), load {}\n", options_.agents,
               broker_.port(), load_average());
    start_fleet();
    restart_broker();
    measure_memory();
    conflict();
    fmt::print("== fleet done, load {}\n", load_average());
    for (auto& agent : agents_) agent->stop(15s);
    return failures_ == 0 ? 0 : 1;
  }

 private:
  std::string client_id(int index) const { return fmt::format("fleet-{:03}", index); }

  Process start_agent(const std::string& id, const std::string& devices) {
    ::mkdir(dir_.file(id).c_str(), 0700);
    ::mkdir(dir_.file(id + "/state").c_str(), 0700);
    ProcessOptions process;
    process.clean_env = true;
    process.log_file = dir_.file(id + ".log");
    process.working_dir = dir_.file(id + "/state");
    process.env = {
        {"MQTT_HOST", "127.0.0.1"},
        {"MQTT_PORT", std::to_string(broker_.port())},
        {"MQTT_CLIENT_ID", id},
        {"PROVISION_KEYS_DIR", dir_.file(id + "/sensor_keys")},
        {"STATE_DIRECTORY", dir_.file(id + "/state")},
        {"PROVISION_PLUGIN_DIR", options_.plugins},
        {"PROVISION_E2EE_POLICY", "off"},
        {"PROVISION_KEY_TYPE", "ec-p256"},
        {"PROVISION_KEY_POOL", "0"},
        {"PROVISION_WORKERS", "1"},
        {"PROVISION_DEVICES", devices},
        {"LOG_LEVEL", "info"},
    };
    return Process({options_.agent, "run"}, process);
  }

  void start_fleet() {
    observer_ = std::make_unique<MqttClient>(broker_.port());
    observer_->subscribe("provision/agents/+/status");
    observer_->subscribe("provision/+/response");
    const auto started = Clock::now();
    for (int i = 0; i < options_.agents; ++i) {
      agents_.push_back(std::make_unique<Process>(start_agent(client_id(i), client_id(i) + "-*")));
      // Starting 200 processes at once makes 200 agent keys at once: spread the start a little
      // so the machine stays usable; start-up is not what is measured here.
      std::this_thread::sleep_for(20ms);
    }
    const bool all = observer_->wait_count(
        "provision/agents/+/status", static_cast<std::size_t>(options_.agents), 600s, is_online);
    fmt::print("  fleet started: {} of {} agents online after {:.1f} s\n",
               count_online(observer_->messages("provision/agents/+/status")), options_.agents,
               std::chrono::duration<double>(Clock::now() - started).count());
    if (!all) fail("not every agent came online");
    // Connected for longer than ReconnectLimits::stable_after (30 s): the restart finds every
    // agent with an established connection, as a real fleet is.
    std::this_thread::sleep_for(35s);
  }

  static std::size_t count_online(const std::vector<Message>& messages) {
    std::set<std::string> agents;
    for (const Message& message : messages)
      if (is_online(message)) agents.insert(message.topic);
    return agents.size();
  }

  void restart_broker() {
    observer_.reset();
    const std::size_t log_before = broker_.log().size();
    broker_.stop();
    const auto down = Clock::now();
    std::this_thread::sleep_for(std::chrono::milliseconds(options_.outage_ms));
    broker_.start();
    const auto up = Clock::now();
    const std::int64_t up_unix = unix_now();
    fmt::print("  broker restarted (persistence on): down for {:.1f} s\n",
               std::chrono::duration<double>(up - down).count());

    // The server publishes a request for each agent right away, while most are still away: the
    // broker queues them in the agents' sessions.
    observer_ = std::make_unique<MqttClient>(broker_.port());
    observer_->subscribe("provision/agents/+/status");
    observer_->subscribe("provision/+/response");
    const auto published_at = Clock::now();
    for (int i = 0; i < options_.agents; ++i)
      observer_->publish(fmt::format("provision/{}-dev/request", client_id(i)),
                         fmt::format(R"({{"request_id":"outage-{}"}})", i));
    const auto published = Clock::now();
    const bool all_online = observer_->wait_count(
        "provision/agents/+/status", static_cast<std::size_t>(options_.agents), 300s, is_online);
    const auto online = Clock::now();
    const bool all_served = observer_->wait_count(
        "provision/+/response", static_cast<std::size_t>(options_.agents), 120s,
        [](const Message& message) {
          return test::json_string(test::parse_json(message.payload), "status") == "ok";
        });
    const auto served = Clock::now();

    // Connections per second, from the broker's own log ("<unix>: New client connected from
    // 127.0.0.1:port as fleet-001 (...)").
    std::map<std::int64_t, int> per_second;
    std::istringstream lines(broker_.log().substr(log_before));
    for (std::string line; std::getline(lines, line);) {
      if (line.find("New client connected") == std::string::npos ||
          line.find(" as fleet-") == std::string::npos)
        continue;
      per_second[std::stoll(line.substr(0, line.find(':')))] += 1;
    }
    int total = 0, busiest = 0;
    std::int64_t first = 0, last = 0;
    for (const auto& [second, count] : per_second) {
      if (total == 0) first = second;
      last = second;
      total += count;
      busiest = std::max(busiest, count);
    }
    fmt::print(
        "  reconnects after the restart (broker log): {} connections over {} s "
        "(first {} s after the broker was up, last {} s); busiest second {} = {:.1f}% of "
        "the fleet\n",
        total, last - first + 1, first - up_unix, last - up_unix, busiest,
        100.0 * busiest / options_.agents);
    std::string histogram;
    for (std::int64_t second = first; total > 0 && second <= last; ++second)
      histogram += fmt::format("{} ", per_second.count(second) ? per_second[second] : 0);
    fmt::print("  connections per second: {}\n", histogram);
    fmt::print("  every agent subscribed again {:.1f} s after the broker was up ({} of {})\n",
               std::chrono::duration<double>(online - up).count(),
               count_online(observer_->messages("provision/agents/+/status")), options_.agents);
    std::size_t ok = 0;
    for (const Message& message : observer_->messages("provision/+/response"))
      ok += test::json_string(test::parse_json(message.payload), "status") == "ok" ? 1 : 0;
    fmt::print(
        "  requests published {:.2f} s after the restart (within {:.2f} s): {} of {} "
        "served, the last {:.1f} s after the broker was up\n",
        std::chrono::duration<double>(published_at - up).count(),
        std::chrono::duration<double>(published - published_at).count(), ok, options_.agents,
        std::chrono::duration<double>(served - up).count());
    if (!all_online) fail("not every agent came back");
    if (!all_served) fail("not every request published during the outage was served");
    if (busiest * 10 > options_.agents) fail("a second with more than 10% of the fleet connecting");
  }

  void measure_memory() {
    std::vector<double> rss, pss;
    for (auto& agent : agents_) {
      rss.push_back(static_cast<double>(proc_kib(agent->pid(), "status", "VmRSS")));
      const long proportional = proc_kib(agent->pid(), "smaps_rollup", "Pss");
      if (proportional >= 0) pss.push_back(static_cast<double>(proportional));
    }
    const Figures r = summarize(rss);
    const Figures p = summarize(pss);
    fmt::print(
        "  memory per agent, idle after the restart: VmRSS median {:.0f} KiB (min {:.0f}, "
        "max {:.0f}); Pss (shared pages split) median {:.0f} KiB; all {} agents: {:.1f} "
        "MiB RSS\n",
        r.median, r.min, r.max, p.median, agents_.size(), [&] {
          double sum = 0;
          for (double value : rss) sum += value;
          return sum / 1024;
        }());
  }

  void conflict() {
    // The same client id for both, as on two Pis cloned from one SD card; each its own folders.
    const std::string id = "fleet-clone";
    auto clone = [&](const std::string& name) {
      ::mkdir(dir_.file(name).c_str(), 0700);
      ::mkdir(dir_.file(name + "/state").c_str(), 0700);
      ProcessOptions process;
      process.clean_env = true;
      process.log_file = dir_.file(name + ".log");
      process.working_dir = dir_.file(name + "/state");
      process.env = {{"MQTT_HOST", "127.0.0.1"},
                     {"MQTT_PORT", std::to_string(broker_.port())},
                     {"MQTT_CLIENT_ID", id},
                     {"PROVISION_KEYS_DIR", dir_.file(name + "/sensor_keys")},
                     {"STATE_DIRECTORY", dir_.file(name + "/state")},
                     {"PROVISION_PLUGIN_DIR", options_.plugins},
                     {"PROVISION_KEY_POOL", "0"},
                     {"LOG_LEVEL", "info"}};
      return Process({options_.agent, "run"}, process);
    };
    takeovers_before_ = count(broker_.log(), "already connected, closing old connection");
    Process a = clone("clone-a");
    std::this_thread::sleep_for(2s);  // the first Pi is up; the clone boots
    const auto clone_started = Clock::now();
    Process b = clone("clone-b");
    std::optional<double> a_at, b_at;
    while (Clock::now() - clone_started < 180s && (!a_at || !b_at)) {
      const double now = std::chrono::duration<double>(Clock::now() - clone_started).count();
      if (!a_at && a.log().find("client id conflict") != std::string::npos) a_at = now;
      if (!b_at && b.log().find("client id conflict") != std::string::npos) b_at = now;
      std::this_thread::sleep_for(100ms);
    }
    auto text = [](const std::optional<double>& at) {
      return at ? fmt::format("{:.1f} s", *at) : std::string("not within 180 s");
    };
    fmt::print(
        "  two agents on one client id: conflict reported by the first after {}, by the "
        "clone after {} (from the clone's start)\n",
        text(a_at), text(b_at));
    // How hard they fight: the broker's takeovers until both reported it, and in the next three
    // minutes.
    const std::size_t before = count(broker_.log(), "already connected, closing old connection");
    std::this_thread::sleep_for(180s);
    const std::size_t after = count(broker_.log(), "already connected, closing old connection");
    fmt::print(
        "  takeovers (the broker's log): {} until both reported the conflict, {} in the "
        "three minutes after\n",
        before - takeovers_before_, after - before);
    if (!a_at || !b_at || *a_at > 60 || *b_at > 60)
      fail("the two agents did not both report the conflict within 60 s");
    a.stop(15s);
    b.stop(15s);
  }

  static std::size_t count(const std::string& text, const std::string& part) {
    std::size_t found = 0;
    for (std::size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1))
      ++found;
    return found;
  }

  void fail(const std::string& what) {
    ++failures_;
    fmt::print("  INCOMPLETE: {}\n", what);
  }

  FleetBenchOptions options_;
  TempDir dir_;
  Broker broker_;
  std::unique_ptr<MqttClient> observer_;
  std::vector<std::unique_ptr<Process>> agents_;
  int failures_ = 0;
  std::size_t takeovers_before_ = 0;
};

}  // namespace

int run_fleet(const FleetBenchOptions& options) {
  FleetBenchOptions absolute = options;
  absolute.agent = std::filesystem::absolute(options.agent).string();
  absolute.plugins = std::filesystem::absolute(options.plugins).string();
  Fleet fleet(absolute);
  return fleet.run();
}

}  // namespace pa::bench
