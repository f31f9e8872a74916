// `provision-agent check` (SPEC section 7).
#include <cstdio>

#include "cli/command.hpp"
#include "cli/operator_commands.hpp"

namespace pa::cli {
namespace {

class CheckCommand : public Command {
 public:
  void define(CLI::App&) override {}
  // An invalid configuration is one of its FAIL lines, not an exit 78.
  int run(const ConfigInputs& inputs) override { return run_check(inputs, stdout); }
};

}  // namespace

std::unique_ptr<Command> make_check_command() {
  return std::make_unique<CheckCommand>();
}

}  // namespace pa::cli
