// `provision-agent keys list|show|verify` (SPEC section 7).
#include <cstdio>

#include "cli/command.hpp"
#include "cli/operator_commands.hpp"

namespace pa::cli {
namespace {

class KeysCommand : public Command {
 public:
  void define(CLI::App& app) override {
    app.require_subcommand(1);
    list_ = app.add_subcommand("list", "every device: user, key type, fingerprint, modes, status");
    show_ = app.add_subcommand(
        "show", "one device's key type, fingerprint, public key, paths, modes and backup");
    show_->add_option("DEVICE", device_, "device id")->required();
    user_option_ = show_->add_option("--user", user_, "the device's user (default: every user's)")
                       ->type_name("USER");
    verify_ = app.add_subcommand(
        "verify", "check every key pair, mode and owner; exit 1 on any problem (repairs nothing)");
    for (CLI::App* sub : {list_, show_, verify_}) sub->fallthrough();
  }

  int run(const ConfigInputs& inputs) override {
    const Config config = load_config(inputs);
    if (list_->parsed()) return run_keys_list(config, stdout);
    if (show_->parsed()) {
      std::optional<std::string> user;
      if (user_option_->count() > 0) user = user_;
      return run_keys_show(config, device_, user, stdout);
    }
    return run_keys_verify(config, stdout);
  }

 private:
  CLI::App* list_ = nullptr;
  CLI::App* show_ = nullptr;
  CLI::App* verify_ = nullptr;
  CLI::Option* user_option_ = nullptr;
  std::string device_;
  std::string user_;
};

}  // namespace

std::unique_ptr<Command> make_keys_command() {
  return std::make_unique<KeysCommand>();
}

}  // namespace pa::cli
