#pragma once
// What the modes of pa_bench share (SPEC section 10): timing runs and summarising them. Figures
// are reported, never asserted: timing targets live here, not in the tests.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <string>
#include <vector>

namespace pa::bench {

using Clock = std::chrono::steady_clock;

inline double ms_between(Clock::time_point start, Clock::time_point end) {
  return std::chrono::duration<double, std::milli>(end - start).count();
}

// Order statistics of a set of samples (nearest rank), in the samples' unit.
struct Figures {
  std::size_t count = 0;
  double min = 0, p10 = 0, median = 0, p90 = 0, p99 = 0, max = 0;
};

inline Figures summarize(std::vector<double> samples) {
  Figures f;
  if (samples.empty()) return f;
  std::sort(samples.begin(), samples.end());
  auto at = [&](double q) { return samples[static_cast<std::size_t>(q * (samples.size() - 1))]; };
  f.count = samples.size();
  f.min = samples.front();
  f.p10 = at(0.10);
  f.median = at(0.50);
  f.p90 = at(0.90);
  f.p99 = at(0.99);
  f.max = samples.back();
  return f;
}

// Runs `work` `runs` times and returns each run's duration in milliseconds.
template <class Work>
std::vector<double> time_runs(int runs, Work work) {
  std::vector<double> ms;
  ms.reserve(static_cast<std::size_t>(runs));
  for (int i = 0; i < runs; ++i) {
    const auto start = Clock::now();
    work();
    ms.push_back(ms_between(start, Clock::now()));
  }
  return ms;
}

// "1.23 0.98 0.71" from /proc/loadavg, printed with each mode so a busy machine shows.
std::string load_average();

struct AgentBenchOptions {
  std::string agent;                     // the provision-agent executable
  std::string plugins;                   // its PROVISION_PLUGIN_DIR
  int devices = 1000;                    // burst size
  int starts = 5;                        // measured starts (after one that creates the agent key)
  int latency = 200;                     // sequential ec-p256 requests
  int latency_rsa = 20;                  // sequential rsa-2048 requests
  int noop = 2000;                       // publish_key answered not_found
  std::vector<std::string> agent_env;    // NAME=VALUE added to (or replacing) the agent's variables
  std::string spool_disk = "/var/tmp";   // spool mode: a folder on disk
  std::string spool_tmpfs = "/dev/shm";  // spool mode: a folder on tmpfs
  std::string arm_agent;                 // speed mode: an armhf build run under qemu-arm
  std::string arm_plugins;               // and its plugin folder
  int store_devices = 10000;             // speed mode: the large key store
};

struct FleetBenchOptions {
  std::string agent;     // the provision-agent executable
  std::string plugins;   // its PROVISION_PLUGIN_DIR
  int agents = 200;      // agent processes on the one broker
  int outage_ms = 5000;  // how long the broker stays down between its stop and its start
};

// Each returns the process exit status: 0 when every phase completed.
int run_decrypt(int runs);
int run_keygen(int runs);
int run_agent(const AgentBenchOptions& options);
// The agent with and without its intake spool, the state folder on disk and on tmpfs.
int run_spool(const AgentBenchOptions& options);
// Issue 13: the key pool warm and off (natively and under qemu-arm), encrypted requests with 10
// and 10,000 devices in the store, bursts with 1 and all workers.
int run_speed(const AgentBenchOptions& options);
// A simulated fleet through a broker restart, and two agents on one client id (SPEC 3.6).
int run_fleet(const FleetBenchOptions& options);

}  // namespace pa::bench
