// `provision-agent config` (SPEC section 2): the effective configuration and where each value came
// from, secrets masked.
#include <cstdio>

#include "cli/command.hpp"

namespace pa::cli {
namespace {

class ConfigCommand : public Command {
 public:
  void define(CLI::App&) override {}
  int run(const ConfigInputs& inputs) override {
    const Config config = load_config(inputs);
    for (const std::string& line : describe_config(config)) std::printf("%s\n", line.c_str());
    return 0;
  }
};

}  // namespace

std::unique_ptr<Command> make_config_command() {
  return std::make_unique<ConfigCommand>();
}

}  // namespace pa::cli
