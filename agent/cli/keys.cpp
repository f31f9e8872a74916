// `provision-agent keys list|show|verify` (SPEC section 7): the key store read directly, without
// a broker; nothing is created, repaired or removed.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <set>
#include <utility>

#include "base/time.hpp"
#include "cli/command.hpp"
#include "cli/findings.hpp"
#include "intake/agent_key.hpp"
#include "keystore/identifier.hpp"
#include "keystore/inspect.hpp"
#include "keystore/key_store.hpp"
#include "keystore/permissions.hpp"
#include "keystore/rotation.hpp"

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

std::int64_t unix_now() {
  return static_cast<std::int64_t>(std::time(nullptr));
}

// "400d", "5h", "12m", "30s": the largest whole unit, as an operator reads an age at a glance.
std::string age_text(std::int64_t seconds) {
  if (seconds < 0) return "future";  // created after `now`: the clock was behind (SPEC 5)
  for (const auto& [unit, name] : {std::pair{86400, 'd'}, {3600, 'h'}, {60, 'm'}})
    if (seconds >= unit) return fmt::format("{}{}", seconds / unit, name);
  return fmt::format("{}s", seconds);
}

// `keys list`: one line per device: user, device, key type, fingerprint, modes
// (folder/private/public), status, the key's age and its certificate's expiry (SPEC section 5).
int list_keys(const Config& config, std::FILE* out) {
  const auto devices = inspect_or_report(config, out);
  if (!devices) return 1;
  const std::int64_t now = unix_now();
  fmt::print(out, "key store: {}\n", config.keys_dir);
  if (devices->empty()) {
    fmt::print(out, "no keys\n");
    return 0;
  }
  using Row = std::array<std::string, 8>;
  std::vector<Row> rows = {{"USER", "DEVICE", "TYPE", "FINGERPRINT", "MODES(dir/priv/pub)",
                            "STATUS", "AGE", "CERT_EXPIRES"}};
  for (const DeviceReport& device : *devices) {
    std::string age_cell = "-";
    std::string certificate_cell = "-";
    if (const auto age = keystore::key_age(device.folder, config.key_max_age_seconds, now)) {
      age_cell = age_text(now - age->created) + (age->due ? "(due)" : "");
      if (age->certificate) certificate_cell = format_rfc3339(age->certificate->not_after);
    }
    rows.push_back({device.folder.user.value_or("-"), device.folder.device, type_text(device),
                    device.fingerprint.empty() ? "-" : device.fingerprint,
                    fmt::format("{}/{}/{}", mode_text(device.dir), mode_text(device.private_key),
                                mode_text(device.public_key)),
                    std::string(keystore::to_string(device.status())), age_cell, certificate_cell});
  }
  Row::size_type columns = rows.front().size();
  std::array<std::size_t, 8> width{};
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
  const std::int64_t now = unix_now();
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
    if (const auto age = keystore::key_age(report.folder, config.key_max_age_seconds, now)) {
      fmt::print(out, "created:     {} ({} ago)\n", format_rfc3339(age->created),
                 age_text(now - age->created));
      if (const auto& certificate = age->certificate)
        fmt::print(out, "certificate: {}, valid {} to {}\n", certificate->subject,
                   format_rfc3339(certificate->not_before), format_rfc3339(certificate->not_after));
      else
        fmt::print(out, "certificate: none\n");
      if (age->due) fmt::print(out, "rotation:    due: {}\n", age->due->reason);
    }
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

// `keys due`: one line per device due for rotation (SPEC section 5); 1 when any is, for a
// systemd timer's ExecCondition=.
int due_keys(const Config& config, std::FILE* out) {
  const std::int64_t now = unix_now();
  std::vector<keystore::KeyAge> ages;
  try {
    ages = keystore::key_ages(config.keys_dir, config.key_max_age_seconds, now);
  } catch (const keystore::StoreError& error) {
    fmt::print(out, "FAIL key store {}: {}; fix: run as the key store's owner\n", config.keys_dir,
               error.what());
    return 1;
  }
  std::size_t due = 0;
  for (const keystore::KeyAge& age : ages) {
    if (!age.due) continue;
    ++due;
    const std::string label =
        age.folder.user ? *age.folder.user + "/" + age.folder.device : age.folder.device;
    fmt::print(out, "DUE  {}: {} (key age {}{})\n", label, age.due->reason,
               age_text(age.due->age_s),
               age.due->not_after ? ", certificate ends " + format_rfc3339(*age.due->not_after)
                                  : std::string());
  }
  const std::string rule =
      config.key_max_age_seconds
          ? fmt::format("keys older than {} or certificates past 80% of their lifetime",
                        keystore::format_duration(*config.key_max_age_seconds))
          : std::string("certificates past 80% of their lifetime (PROVISION_KEY_MAX_AGE is unset)");
  fmt::print(out, "{} of {} due for rotation: {}\n", due, count_devices(ages.size()), rule);
  std::fflush(out);
  return due > 0 ? 1 : 0;
}

// `keys show --agent`: the agent's public key and fingerprint, for the server to pin (SPEC 3.2).
int show_agent_key(const Config& config, std::FILE* out) {
  std::optional<gid_t> key_group;
  if (config.key_group) key_group = keystore::resolve_group(*config.key_group);
  const std::optional<AgentKey> key = find_agent_key(config, key_group);
  if (!key) {
    fmt::print(stderr,
               "provision-agent: no agent key yet in {}: the agent makes one when it first starts "
               "(or set PROVISION_AGENT_KEY)\n",
               config.state_dir);
    return 1;
  }
  fmt::print(out, "agent key:   {}\n", key->path);
  fmt::print(out, "fingerprint: {}\n", keystore::fingerprint(key->public_pem));
  fmt::print(out, "public key:\n{}", key->public_pem);
  if (!key->public_pem.empty() && key->public_pem.back() != '\n') fmt::print(out, "\n");
  return 0;
}

class KeysCommand : public Command {
 public:
  void define(CLI::App& app) override {
    app.require_subcommand(1);
    list_ = app.add_subcommand(
        "list",
        "every device: user, key type, fingerprint, modes, status, age, certificate expiry");
    show_ = app.add_subcommand(
        "show",
        "one device's key type, fingerprint, public key, paths, modes and backup; or with --agent "
        "the agent's public key and fingerprint");
    CLI::Option* device = show_->add_option("DEVICE", device_, "device id");
    user_option_ = show_->add_option("--user", user_, "the device's user (default: every user's)")
                       ->type_name("USER");
    agent_option_ = show_->add_flag("--agent", "the agent's own public key, for a server to pin");
    agent_option_->excludes(device)->excludes(user_option_);
    verify_ = app.add_subcommand(
        "verify", "check every key pair, mode and owner; exit 1 on any problem (repairs nothing)");
    due_ = app.add_subcommand(
        "due", "every device due for rotation (key age, certificate lifetime); exit 1 if any is");
    for (CLI::App* sub : {list_, show_, verify_, due_}) sub->fallthrough();
  }

  int run(const ConfigInputs& inputs) override {
    const Config config = load_config(inputs);
    if (list_->parsed()) return list_keys(config, stdout);
    if (due_->parsed()) return due_keys(config, stdout);
    if (show_->parsed()) {
      if (agent_option_->count() > 0) return show_agent_key(config, stdout);
      if (device_.empty()) {
        std::fprintf(stderr, "provision-agent: keys show needs a DEVICE (or --agent)\n");
        return kExitConfig;
      }
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
  CLI::App* due_ = nullptr;
  CLI::Option* user_option_ = nullptr;
  CLI::Option* agent_option_ = nullptr;
  std::string device_;
  std::string user_;
};

}  // namespace

std::unique_ptr<Command> make_keys_command() {
  return std::make_unique<KeysCommand>();
}

}  // namespace pa::cli
