// `provision-agent [run]`: the daemon (SPEC sections 3 and 8).
#include <csignal>

#include "agent.hpp"
#include "base/log.hpp"
#include "cli/command.hpp"

namespace pa::cli {
namespace {

// Set from the signal handler: the one piece of global state a C callback forces.
std::atomic<bool> g_stop_requested{false};

void request_stop(int /*signal*/) {
  g_stop_requested = true;
}

void install_signal_handlers() {
  struct sigaction action {};
  action.sa_handler = request_stop;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  // Past a file size limit (LimitFSIZE=, ulimit -f) a write fails with EFBIG, which the spool
  // answers storage_failed, instead of SIGXFSZ ending the daemon.
  std::signal(SIGXFSZ, SIG_IGN);
}

class RunCommand : public Command {
 public:
  void define(CLI::App&) override {}
  int run(const ConfigInputs& inputs) override {
    // First: a SIGTERM during start-up (spool recovery, a slow key store) ends the agent through
    // its clean path, not the default action.
    install_signal_handlers();
    const Config config = load_config(inputs);
    log_init(config.log_level);
    Agent agent(config);
    return agent.run(g_stop_requested);
  }
};

}  // namespace

std::unique_ptr<Command> make_run_command() {
  return std::make_unique<RunCommand>();
}

}  // namespace pa::cli
