// pa_bench: the figures of SPEC section 10, one mode per group of figures.
//   pa_bench decrypt [runs]   open one envelope (RSA-OAEP + AES-EAX/GCM), default 200 runs
//   pa_bench keygen [runs]    key generation against `openssl genpkey` in the same run, default 20
//   pa_bench agent --agent PATH --plugins DIR [--devices 1000]
//                             a real mosquitto and agent on 127.0.0.1: memory, start-up, latency,
//                             throughput, CPU per request
//   pa_bench spool --agent PATH --plugins DIR [--disk /var/tmp] [--tmpfs /dev/shm]
//                             what the intake spool costs: throughput and latency with it and
//                             without it, the state folder on disk and on tmpfs
//   pa_bench speed --agent PATH --plugins DIR [--arm-agent PATH --arm-plugins DIR]
//                             issue 13: latency with the key pool warm and off (rsa-2048,
//                             rsa-4096; also under qemu-arm), encrypted requests with 10 and
//                             10,000 devices in the store, bursts with 1 and all workers
//   pa_bench fleet --agent PATH --plugins DIR [--agents 200] [--outage-ms 5000]
//                             a simulated fleet on one mosquitto through a broker restart:
//                             reconnect spread, time to resubscribe, requests served, memory per
//                             agent; two agents on one client id (SPEC 3.6)
// bench/run.sh builds everything and runs the modes (fleet only with PA_BENCH_FLEET=1).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <exception>
#include <fstream>

#include "bench.hpp"

namespace pa::bench {

std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return fmt::format("{} {} {}", one, five, fifteen);
}

}  // namespace pa::bench

int main(int argc, char** argv) {
  CLI::App app{"provision-agent benchmarks (SPEC section 10); figures are reported, not asserted"};
  app.require_subcommand(1);

  int decrypt_runs = 200;
  CLI::App* decrypt =
      app.add_subcommand("decrypt", "time opening one envelope with an RSA-2048 key");
  decrypt->add_option("runs", decrypt_runs, "runs per variant")->check(CLI::PositiveNumber);

  int keygen_runs = 20;
  CLI::App* keygen = app.add_subcommand(
      "keygen", "time key generation, RSA-2048 against openssl genpkey in the same run");
  keygen->add_option("runs", keygen_runs, "RSA-2048 runs of each")->check(CLI::PositiveNumber);

  pa::bench::AgentBenchOptions agent_options;
  CLI::App* agent = app.add_subcommand(
      "agent", "run a real mosquitto and provision-agent on 127.0.0.1 and measure them");
  agent->add_option("--agent", agent_options.agent, "the provision-agent executable")
      ->required()
      ->check(CLI::ExistingFile);
  agent->add_option("--plugins", agent_options.plugins, "the plugin folder (PROVISION_PLUGIN_DIR)")
      ->required()
      ->check(CLI::ExistingDirectory);
  agent->add_option("--devices", agent_options.devices, "distinct devices in each burst")
      ->check(CLI::Range(1, 100000));
  agent->add_option("--starts", agent_options.starts, "measured starts")->check(CLI::Range(1, 100));
  agent->add_option("--latency", agent_options.latency, "sequential ec-p256 requests")
      ->check(CLI::Range(1, 100000));
  agent->add_option("--latency-rsa", agent_options.latency_rsa, "sequential rsa-2048 requests")
      ->check(CLI::Range(1, 10000));
  agent->add_option("--noop", agent_options.noop, "publish_key requests answered not_found")
      ->check(CLI::Range(1, 100000));

  agent->add_option("--agent-env", agent_options.agent_env,
                    "NAME=VALUE for the agent's environment, after the bench's own (repeatable)");

  pa::bench::AgentBenchOptions spool_options;
  spool_options.devices = 500;
  spool_options.noop = 1000;
  spool_options.latency = 100;
  CLI::App* spool = app.add_subcommand(
      "spool", "the agent with and without its intake spool, state on disk and on tmpfs");
  spool->add_option("--agent", spool_options.agent, "the provision-agent executable")
      ->required()
      ->check(CLI::ExistingFile);
  spool->add_option("--plugins", spool_options.plugins, "the plugin folder (PROVISION_PLUGIN_DIR)")
      ->required()
      ->check(CLI::ExistingDirectory);
  spool->add_option("--devices", spool_options.devices, "distinct devices in each burst")
      ->check(CLI::Range(1, 100000));
  spool->add_option("--noop", spool_options.noop, "publish_key requests answered not_found")
      ->check(CLI::Range(1, 100000));
  spool->add_option("--latency", spool_options.latency, "sequential ec-p256 requests")
      ->check(CLI::Range(1, 100000));
  spool->add_option("--disk", spool_options.spool_disk, "a folder on disk (default /var/tmp)")
      ->check(CLI::ExistingDirectory);
  spool->add_option("--tmpfs", spool_options.spool_tmpfs, "a folder on tmpfs (default /dev/shm)")
      ->check(CLI::ExistingDirectory);

  pa::bench::AgentBenchOptions speed_options;
  speed_options.latency_rsa = 12;
  CLI::App* speed = app.add_subcommand(
      "speed", "issue 13: key pool warm and off, key store size, bursts (one run, side by side)");
  speed->add_option("--agent", speed_options.agent, "the provision-agent executable")
      ->required()
      ->check(CLI::ExistingFile);
  speed->add_option("--plugins", speed_options.plugins, "the plugin folder (PROVISION_PLUGIN_DIR)")
      ->required()
      ->check(CLI::ExistingDirectory);
  speed
      ->add_option("--arm-agent", speed_options.arm_agent,
                   "an armhf provision-agent, run under qemu-arm for the pool figures")
      ->check(CLI::ExistingFile);
  speed->add_option("--arm-plugins", speed_options.arm_plugins, "its plugin folder")
      ->check(CLI::ExistingDirectory);
  speed
      ->add_option("--pool-requests", speed_options.latency_rsa,
                   "sequential rsa-2048 requests per pool setting (half as many rsa-4096)")
      ->check(CLI::Range(2, 1000));
  speed->add_option("--store-devices", speed_options.store_devices, "the large key store")
      ->check(CLI::Range(10, 100000));
  speed->add_option("--devices", speed_options.devices, "distinct devices in each burst")
      ->check(CLI::Range(1, 100000));
  speed->add_option("--noop", speed_options.noop, "4x the encrypted requests per store size")
      ->check(CLI::Range(4, 100000));
  pa::bench::FleetBenchOptions fleet_options;
  CLI::App* fleet = app.add_subcommand(
      "fleet", "a simulated fleet of agents on one mosquitto through a broker restart");
  fleet->add_option("--agent", fleet_options.agent, "the provision-agent executable")
      ->required()
      ->check(CLI::ExistingFile);
  fleet->add_option("--plugins", fleet_options.plugins, "the plugin folder (PROVISION_PLUGIN_DIR)")
      ->required()
      ->check(CLI::ExistingDirectory);
  fleet->add_option("--agents", fleet_options.agents, "agent processes")
      ->check(CLI::Range(2, 2000));
  fleet->add_option("--outage-ms", fleet_options.outage_ms, "how long the broker stays down")
      ->check(CLI::Range(0, 600000));

  CLI11_PARSE(app, argc, argv);
  // The agent's broker connection may drop while we write to it; report, do not die.
  std::signal(SIGPIPE, SIG_IGN);
  try {
    if (*decrypt) return pa::bench::run_decrypt(decrypt_runs);
    if (*keygen) return pa::bench::run_keygen(keygen_runs);
    if (*spool) return pa::bench::run_spool(spool_options);
    if (*speed) {
      if (speed_options.arm_agent.empty() != speed_options.arm_plugins.empty())
        throw std::invalid_argument("--arm-agent and --arm-plugins go together");
      return pa::bench::run_speed(speed_options);
    }
    if (*fleet) return pa::bench::run_fleet(fleet_options);
    return pa::bench::run_agent(agent_options);
  } catch (const std::exception& error) {
    fmt::print(stderr, "pa_bench: {}\n", error.what());
    return 1;
  }
}
