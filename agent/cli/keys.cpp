// `provision-agent keys list|show|verify` (SPEC section 7): the key store read directly, without
// a broker; nothing is created, repaired or removed.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <set>

#include "cli/command.hpp"
#include "cli/findings.hpp"
#include "keystore/identifier.hpp"
#include "keystore/inspect.hpp"
#include "keystore/key_store.hpp"

namespace pa::cli {
namespace {

using keystore::DeviceReport;

// Every device of the store; a FAIL line and nullopt when the store cannot be read.
std::optional<std::vector<DeviceReport>> inspect_or_report(const Config& config, std::FILE* out) {
  try {
    return keystore::inspect_store(config.keys_dir);
  } catch (const keystore::StoreError& error) {
    fmt::print(out, "FAIL key store {}: {}; fix: run as the key store's owner\n", config.keys_dir,
               error.what());
    return std::nullopt;
  }
}

std::string type_text(const DeviceReport& device) {
  return device.type ? std::string(keystore::to_string(*device.type)) : "?";
}

// `keys list`: one line per device: user, device, key type, fingerprint, modes
// (folder/private/public) and status.
int list_keys(const Config& config, std::FILE* out) {
  const auto devices = inspect_or_report(config, out);
  if (!devices) return 1;
  fmt::print(out, "key store: {}\n", config.keys_dir);
  if (devices->empty()) {
    fmt::print(out, "no keys\n");
    return 0;
  }
  using Row = std::array<std::string, 6>;
  std::vector<Row> rows = {
      {"USER", "DEVICE", "TYPE", "FINGERPRINT", "MODES(dir/priv/pub)", "STATUS"}};
  for (const DeviceReport& device : *devices) {
    rows.push_back({device.folder.user.value_or("-"), device.folder.device, type_text(device),
                    device.fingerprint.empty() ? "-" : device.fingerprint,
                    fmt::format("{}/{}/{}", mode_text(device.dir), mode_text(device.private_key),
                                mode_text(device.public_key)),
                    std::string(keystore::to_string(device.status()))});
  }
  Row::size_type columns = rows.front().size();
  std::array<std::size_t, 6> width{};
  for (const Row& row : rows)
    for (std::size_t i = 0; i < columns; ++i) width[i] = std::max(width[i], row[i].size());
  for (const Row& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < columns; ++i)
      line += i + 1 < columns ? fmt::format("{:<{}}  ", row[i], width[i]) : row[i];
    fmt::print(out, "{}\n", line);
  }
  return 0;
}

// `keys show DEVICE [--user U]`: type, fingerprint, public key, paths and modes, backup and
// problems of the device's keys (every user's when no user is given).
int show_keys(const Config& config, const std::string& device,
              const std::optional<std::string>& user, std::FILE* out) {
  if (!keystore::is_valid_identifier(device)) {
    fmt::print(stderr, "provision-agent: \"{}\" is not a valid device id\n", device);
    return 1;
  }
  if (user && !keystore::is_valid_identifier(*user)) {
    fmt::print(stderr, "provision-agent: \"{}\" is not a valid user id\n", *user);
    return 1;
  }
  auto devices = inspect_or_report(config, out);
  if (!devices) return 1;
  devices->erase(std::remove_if(devices->begin(), devices->end(),
                                [&](const DeviceReport& report) {
                                  return report.folder.device != device ||
                                         (user && report.folder.user != user);
                                }),
                 devices->end());
  if (devices->empty()) {
    fmt::print(stderr, "provision-agent: no keys for device {}{} in {}\n", device,
               user ? " of user " + *user : "", config.keys_dir);
    return 1;
  }
  bool first = true;
  for (const DeviceReport& report : *devices) {
    if (!first) fmt::print(out, "\n");
    first = false;
    fmt::print(out, "device:      {}\n", report.folder.device);
    fmt::print(out, "user:        {}\n", report.folder.user.value_or("- (legacy layout)"));
    fmt::print(out, "key type:    {}\n", type_text(report));
    fmt::print(out, "fingerprint: {}\n", report.fingerprint.empty() ? "-" : report.fingerprint);
    fmt::print(out, "status:      {}\n", keystore::to_string(report.status()));
    fmt::print(out, "files:\n");
    for (const keystore::FileFacts* file : {&report.dir, &report.private_key, &report.public_key,
                                            &report.private_backup, &report.public_backup}) {
      if (!file->exists && (file == &report.private_backup || file == &report.public_backup))
        continue;
      fmt::print(out, "  {} {:<16} {}\n", mode_text(*file),
                 file->exists ? user_name(file->uid) : "-", file->path.string());
    }
    fmt::print(out, "backup:      {}\n",
               report.private_backup.exists ? "yes (previous generation kept)" : "no");
    for (const keystore::KeyProblem& problem : report.problems) {
      const Wording wording = word(report, problem);
      fmt::print(out, "problem:     {}: {}; fix: {}\n", problem.path.string(), wording.why,
                 wording.fix);
    }
    if (!report.public_pem.empty()) {
      fmt::print(out, "public key:\n{}", report.public_pem);
      if (report.public_pem.back() != '\n') fmt::print(out, "\n");
    }
  }
  return 0;
}

// `keys verify`: an OK line per sound device, a FAIL line with the path and the fix per problem;
// repairs nothing.
int verify_keys(const Config& config, std::FILE* out) {
  Findings findings(out);
  const std::filesystem::path root = config.keys_dir;
  if (const auto problem = keystore::inspect_root(root, config.key_group)) {
    const Wording wording = word(*problem);
    findings.fail("key store root " + root.string(), wording.why, wording.fix);
    return 1;
  }
  findings.ok(root_summary(root));
  const auto devices = inspect_or_report(config, out);
  if (!devices) return 1;
  std::set<std::pair<std::string, std::string>> shown;
  std::size_t with_problems = 0;
  for (const DeviceReport& device : *devices) {
    if (device.problems.empty()) {
      findings.ok(fmt::format("{}: {} {}", device.label(), type_text(device), device.fingerprint));
      continue;
    }
    ++with_problems;
    for (const keystore::KeyProblem& problem : device.problems) {
      const Wording wording = word(device, problem);
      if (shown.insert({problem.path.string(), wording.why}).second)
        findings.fail(problem.path.string(), wording.why, wording.fix);
    }
  }
  // The device index the agent builds at start (issue 13) must find every pair listed above.
  try {
    for (const keystore::IndexProblem& problem : keystore::check_index(root))
      findings.fail(problem.path.string(), problem.why, "report it: the agent's index has a bug");
  } catch (const keystore::StoreError& error) {
    findings.fail("device index of " + root.string(), error.what(), "check the key store root");
  }
  fmt::print(out, "{} checked, {} with problems\n", count_devices(devices->size()), with_problems);
  std::fflush(out);
  return findings.failures() > 0 ? 1 : 0;
}

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
    if (list_->parsed()) return list_keys(config, stdout);
    if (show_->parsed()) {
      std::optional<std::string> user;
      if (user_option_->count() > 0) user = user_;
      return show_keys(config, device_, user, stdout);
    }
    return verify_keys(config, stdout);
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
