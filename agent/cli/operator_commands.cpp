// Operator commands (SPEC section 7): `check` and `keys list/show/verify`. Everything here reads;
// nothing creates, repairs or removes a file (KeyStore::load repairs, so it is not used).
#include "cli/operator_commands.hpp"

#include "base/time.hpp"

#include <cryptopp/misc.h>
#include <fmt/format.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "base/log.hpp"
#include "dispatch/host.hpp"
#include "dispatch/plugin_loader.hpp"
#include "intake/request.hpp"
#include "keystore/file_util.hpp"
#include "keystore/identifier.hpp"
#include "keystore/key_pair.hpp"
#include "keystore/key_store.hpp"
#include "keystore/permissions.hpp"
#include "agent.hpp"
#include "mqtt/probe.hpp"

// The UTC day this file was built, YYYYMMDD (set by CMake, honouring SOURCE_DATE_EPOCH).
#ifndef PA_BUILD_DATE
#define PA_BUILD_DATE 20240101
#endif

namespace pa {
namespace {

namespace fs = std::filesystem;
using keystore::DeviceFolder;

// ---------------------------------------------------------------------------------------------
// Output: one "OK   <what>" or "FAIL <what>: <why>; fix: <command>" line per finding.

class Report {
 public:
  explicit Report(std::FILE* out) : out_(out) {}
  void ok(const std::string& what) { fmt::print(out_, "OK   {}\n", what); }
  void fail(const std::string& what, const std::string& why, const std::string& fix) {
    ++failures_;
    fmt::print(out_, "FAIL {}: {}; fix: {}\n", what, why, fix);
  }
  int failures() const { return failures_; }

 private:
  std::FILE* out_;
  int failures_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Key store inspection.

// A private key's text, wiped when it goes out of scope.
struct Secret {
  std::string text;
  Secret() = default;
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  ~Secret() {
    CryptoPP::SecureWipeBuffer(reinterpret_cast<CryptoPP::byte*>(text.data()), text.size());
  }
};

struct FileState {
  fs::path path;
  bool exists = false;
  bool plain = false;  // a real file or folder, not a symlink or special file
  mode_t mode = 0;     // permission bits
  uid_t uid = 0;
};

FileState stat_path(const fs::path& path, bool folder) {
  FileState state;
  state.path = path;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return state;
  state.exists = true;
  state.plain = folder ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode);
  state.mode = st.st_mode & 07777;
  state.uid = st.st_uid;
  return state;
}

std::string mode_text(const FileState& file) {
  return file.exists ? fmt::format("{:04o}", file.mode) : "----";
}

std::string user_name(uid_t uid) {
  struct passwd entry {};
  struct passwd* found = nullptr;
  std::array<char, 2048> buffer{};
  if (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) == 0 && found)
    return found->pw_name;
  return std::to_string(uid);
}

// A permission problem is about who may touch a file; a key problem about what is in it.
enum class ProblemKind { access, key };

struct Problem {
  ProblemKind kind;
  fs::path path;
  std::string why;
  std::string fix;
};

// Worst first: a device's status is the worst of its problems.
enum class Status { corrupt, missing_private, mismatch, bad_backup, wrong_owner, loose_mode, ok };

const char* to_string(Status status) {
  switch (status) {
    case Status::corrupt:
      return "corrupt";
    case Status::missing_private:
      return "missing-private";
    case Status::mismatch:
      return "mismatch";
    case Status::bad_backup:
      return "bad-backup";
    case Status::wrong_owner:
      return "wrong-owner";
    case Status::loose_mode:
      return "loose-mode";
    case Status::ok:
      return "ok";
  }
  return "ok";
}

struct KeyReport {
  DeviceFolder folder;
  FileState user_dir;  // exists only with a user
  FileState dir, private_key, public_key, private_backup, public_backup;
  std::optional<keystore::KeyType> type;
  std::string public_pem;  // derived from the private key; the file's when that is unusable
  std::string fingerprint;
  Status status = Status::ok;
  std::vector<Problem> problems;

  void add(ProblemKind kind, Status problem_status, fs::path path, std::string why,
           std::string fix) {
    problems.push_back({kind, std::move(path), std::move(why), std::move(fix)});
    status = std::min(status, problem_status);
  }
  std::string label() const {
    return folder.user ? *folder.user + "/" + folder.device : folder.device;
  }
};

// The key store's owner as the agent sees it: the effective user, except that root inspecting a
// store owned by the service user judges files against that user.
uid_t expected_owner(const fs::path& root) {
  const uid_t euid = ::geteuid();
  if (euid != 0) return euid;
  struct stat st {};
  return ::stat(root.c_str(), &st) == 0 ? st.st_uid : euid;
}

std::string who_has(mode_t bits) {
  const bool group = (bits & 070) != 0;
  const bool world = (bits & 007) != 0;
  return group && world ? "group and world" : group ? "group" : "world";
}

// Modes and owner of one path. `forbidden`: the group/world bits it must not have (all of them
// for folders and private keys, write for public keys); `wanted` is the mode the fix sets.
void check_access(KeyReport& report, const FileState& file, mode_t forbidden, mode_t wanted,
                  const char* noun, uid_t owner) {
  if (!file.exists || !file.plain) return;
  if ((file.mode & forbidden) != 0) {
    report.add(ProblemKind::access, Status::loose_mode, file.path,
               fmt::format("mode {:04o} gives {} {}; {} must be {:04o}", file.mode,
                           who_has(file.mode & forbidden),
                           (forbidden & 044) != 0 ? "access" : "write access", noun, wanted),
               fmt::format("chmod {:o} {}", wanted, file.path.string()));
  }
  if (file.uid != owner) {
    report.add(ProblemKind::access, Status::wrong_owner, file.path,
               fmt::format("owned by {} (uid {}), not {} (uid {})", user_name(file.uid), file.uid,
                           user_name(owner), owner),
               fmt::format("chown {} {}", user_name(owner), file.path.string()));
  }
}

std::string regenerate_fix(const KeyReport& report) {
  return fmt::format("rm -r {} && provision-agent send {} {}{}", report.dir.path.string(),
                     kActionGenerate, report.folder.device,
                     report.folder.user ? " --user " + *report.folder.user : "");
}

// Reads a key file without following links; the problem goes into `report` when it cannot.
bool read_key(KeyReport& report, const FileState& file, Status status, std::string& text) {
  if (file.exists && !file.plain) {
    report.add(ProblemKind::key, status, file.path,
               "is not a regular file (a symlink or special file); the agent does not follow it",
               fmt::format("rm {}", file.path.string()));
    return false;
  }
  try {
    std::optional<std::string> content = keystore::read_key_file_no_follow(file.path);
    if (!content) return false;
    text = std::move(*content);
    return true;
  } catch (const keystore::StoreError& error) {
    report.add(ProblemKind::key, status, file.path, error.what(),
               fmt::format("run as the key store's owner: sudo -u {} provision-agent keys verify",
                           user_name(file.uid)));
    return false;
  }
}

std::optional<std::string> public_fingerprint(const std::string& pem) {
  try {
    return keystore::fingerprint(pem);
  } catch (const keystore::KeyError&) {
    return std::nullopt;
  }
}

KeyReport inspect(const DeviceFolder& folder, uid_t owner) {
  using keystore::kPrivateBackupFile;
  using keystore::kPrivateKeyFile;
  using keystore::kPublicBackupFile;
  using keystore::kPublicKeyFile;
  KeyReport report;
  report.folder = folder;
  if (folder.user) report.user_dir = stat_path(folder.dir.parent_path(), true);
  report.dir = stat_path(folder.dir, true);
  report.private_key = stat_path(folder.dir / kPrivateKeyFile, false);
  report.public_key = stat_path(folder.dir / kPublicKeyFile, false);
  report.private_backup = stat_path(folder.dir / kPrivateBackupFile, false);
  report.public_backup = stat_path(folder.dir / kPublicBackupFile, false);

  // SPEC section 5: folders 0700, private keys and backups 0600, public keys 0644.
  check_access(report, report.user_dir, 077, 0700, "a key store folder", owner);
  check_access(report, report.dir, 077, 0700, "a key store folder", owner);
  check_access(report, report.private_key, 077, 0600, "a private key", owner);
  check_access(report, report.public_key, 022, 0644, "a public key", owner);
  check_access(report, report.private_backup, 077, 0600, "a private key", owner);
  check_access(report, report.public_backup, 022, 0600, "a backup public key", owner);

  const std::string derive_fix =
      fmt::format("openssl pkey -in {} -pubout -out {} (or let the agent rewrite it on next use)",
                  report.private_key.path.string(), report.public_key.path.string());

  std::optional<keystore::KeyPair> pair;
  Secret private_text;
  if (!report.private_key.exists) {
    report.add(ProblemKind::key, Status::missing_private, report.private_key.path,
               "missing (only the public key is there)", regenerate_fix(report));
  } else if (read_key(report, report.private_key, Status::corrupt, private_text.text)) {
    try {
      pair = keystore::key_pair_from_private_pem(private_text.text);
      CryptoPP::SecureWipeBuffer(reinterpret_cast<CryptoPP::byte*>(pair->private_pem.data()),
                                 pair->private_pem.size());
      report.type = pair->type;
      report.public_pem = pair->public_pem;
      report.fingerprint = keystore::fingerprint(pair->public_pem);
    } catch (const keystore::KeyError& error) {
      report.add(ProblemKind::key, Status::corrupt, report.private_key.path,
                 fmt::format("not a usable private key ({}){}", error.what(),
                             report.private_backup.exists ? "; the previous generation is in " +
                                                                std::string(kPrivateBackupFile)
                                                          : ""),
                 regenerate_fix(report));
    }
  }

  std::string public_text;
  if (!report.public_key.exists) {
    if (pair) {
      report.add(ProblemKind::key, Status::mismatch, report.public_key.path, "missing", derive_fix);
    }
  } else if (read_key(report, report.public_key, Status::mismatch, public_text)) {
    const std::optional<std::string> stored = public_fingerprint(public_text);
    if (!stored) {
      report.add(ProblemKind::key, Status::mismatch, report.public_key.path,
                 "not a public key PEM (BEGIN PUBLIC KEY)",
                 pair ? derive_fix : regenerate_fix(report));
    } else if (pair && *stored != report.fingerprint) {
      report.add(ProblemKind::key, Status::mismatch, report.public_key.path,
                 fmt::format("does not match the private key (it is {}, the private key's is {})",
                             *stored, report.fingerprint),
                 derive_fix);
    } else if (!pair) {
      // Nothing better to show than the stored public key.
      report.public_pem = public_text;
      report.fingerprint = *stored;
      try {
        report.type = keystore::public_key_type(public_text);
      } catch (const keystore::KeyError&) {
      }
    }
  }

  if (report.private_backup.exists) {
    Secret backup_text;
    if (read_key(report, report.private_backup, Status::bad_backup, backup_text.text)) {
      try {
        keystore::KeyPair previous = keystore::key_pair_from_private_pem(backup_text.text);
        CryptoPP::SecureWipeBuffer(reinterpret_cast<CryptoPP::byte*>(previous.private_pem.data()),
                                   previous.private_pem.size());
      } catch (const keystore::KeyError& error) {
        report.add(
            ProblemKind::key, Status::bad_backup, report.private_backup.path,
            fmt::format("the previous generation is not a usable private key ({})", error.what()),
            fmt::format("rm -f {} {}", report.private_backup.path.string(),
                        report.public_backup.path.string()));
      }
    }
  }
  return report;
}

// Problems of the key store root itself, as the agent judges it at start (SPEC section 5).
// nullopt when it is fine or does not exist yet (the agent creates it 0700).
std::optional<Problem> root_problem(const fs::path& root,
                                    const std::optional<std::string>& key_group_name) {
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::nullopt;
    return Problem{ProblemKind::access, root, fmt::format("cannot check it: {}", strerror(errno)),
                   fmt::format("ls -ld {}", root.string())};
  }
  if (!S_ISDIR(st.st_mode))
    return Problem{ProblemKind::access, root, "is not a folder",
                   fmt::format("mv {0} {0}.old (the agent creates the folder)", root.string())};
  std::optional<gid_t> key_group;
  try {
    if (key_group_name) key_group = keystore::resolve_group(*key_group_name);
  } catch (const keystore::StoreError& error) {
    return Problem{ProblemKind::access, root, error.what(),
                   "create the group (groupadd) or fix PROVISION_KEY_GROUP"};
  }
  // Root inspecting the service user's store: the owner is that user, only the modes count.
  if (::geteuid() == 0 && st.st_uid != 0) st.st_uid = 0;
  try {
    keystore::check_private_stat(st, root, keystore::PathKind::folder, key_group);
  } catch (const keystore::PermissionError& error) {
    return Problem{ProblemKind::access, root, error.problem(), error.fix()};
  }
  return std::nullopt;
}

std::string root_summary(const fs::path& root) {
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0)
    return fmt::format("key store root {} does not exist yet (the agent creates it 0700)",
                       root.string());
  return fmt::format("key store root {} (mode {:04o}, owner {})", root.string(), st.st_mode & 07777,
                     user_name(st.st_uid));
}

std::vector<KeyReport> inspect_store(const fs::path& root) {
  const uid_t owner = expected_owner(root);
  std::vector<KeyReport> reports;
  for (const DeviceFolder& folder : keystore::list_device_folders(root))
    reports.push_back(inspect(folder, owner));
  return reports;
}

// Every problem once (a loose user folder is shared by its devices), in store order.
std::vector<Problem> distinct_problems(const std::vector<KeyReport>& reports, ProblemKind kind) {
  std::vector<Problem> problems;
  std::set<std::pair<std::string, std::string>> seen;
  for (const KeyReport& report : reports) {
    for (const Problem& problem : report.problems) {
      if (problem.kind != kind) continue;
      if (seen.insert({problem.path.string(), problem.why}).second) problems.push_back(problem);
    }
  }
  return problems;
}

std::string count_devices(std::size_t count) {
  return fmt::format("{} device{}", count, count == 1 ? "" : "s");
}

// ---------------------------------------------------------------------------------------------
// check

std::string config_fix(const ConfigInputs& inputs) {
  if (inputs.env_file)
    return fmt::format(
        "correct the value in {} (provision-agent config shows each value and "
        "its source)",
        *inputs.env_file);
  return "correct the variable or flag named (provision-agent config shows each value and its "
         "source)";
}

// Each broker of the list (SPEC 3.6), probed by the session's own library (mqtt/probe.hpp).
void check_broker(const Config& config, std::chrono::milliseconds timeout, Report& report) {
  for (const mqtt::BrokerAddress& broker : configured_brokers(config))
    for (const mqtt::Finding& finding : mqtt::check_broker(config, broker, timeout)) {
      if (finding.ok)
        report.ok(fmt::format("{} {}", finding.what, finding.text));
      else
        report.fail(finding.what, finding.text, finding.fix);
    }
}

void check_key_store(const Config& config, Report& report) {
  const fs::path root = config.keys_dir;
  if (std::optional<Problem> problem = root_problem(root, config.key_group)) {
    report.fail("key store root " + root.string(), problem->why, problem->fix);
    return;
  }
  report.ok(root_summary(root));
  std::vector<KeyReport> reports;
  try {
    reports = inspect_store(root);
  } catch (const keystore::StoreError& error) {
    report.fail("key store " + root.string(), error.what(),
                fmt::format("run the check as the key store's owner (ls -ld {})", root.string()));
    return;
  }
  const std::vector<Problem> access = distinct_problems(reports, ProblemKind::access);
  for (const Problem& problem : access)
    report.fail(problem.path.string(), problem.why, problem.fix);
  if (access.empty())
    report.ok(fmt::format("key store modes and owners ({})", count_devices(reports.size())));
  const std::vector<Problem> keys = distinct_problems(reports, ProblemKind::key);
  for (const Problem& problem : keys) report.fail(problem.path.string(), problem.why, problem.fix);
  if (keys.empty())
    report.ok(fmt::format("key pairs consistent ({})", count_devices(reports.size())));
}

void check_plugins(const Config& config, Report& report) {
  HostServices services;
  services.config = &config;
  services.agent_id = config.mqtt_client_id;
  const std::string fix_skipped =
      fmt::format("remove it from {} or rebuild it against provision/plugin.h", config.plugin_dir);
  try {
    auto plugins = plugin::PluginSet::load(config, services);
    for (const auto& plugin : plugins.plugins()) {
      std::vector<std::string> actions;
      for (const auto& action : plugin->actions) actions.push_back(action.name);
      report.ok(fmt::format("plugin {} {} ({})", plugin->name, plugin->version,
                            fmt::join(actions, ", ")));
    }
    for (const auto& skipped : plugins.skipped())
      report.fail("plugin " + skipped.path, skipped.reason, fix_skipped);
    if (!plugins.find(kActionGenerate))
      report.fail("plugins in " + config.plugin_dir,
                  fmt::format("no plugin serves {}", kActionGenerate),
                  fmt::format("install the keygen plugin into {} (or set PROVISION_PLUGIN_DIR)",
                              config.plugin_dir));
  } catch (const ConfigError& error) {
    report.fail("plugins in " + config.plugin_dir, error.what(),
                "correct PROVISION_PLUGIN_DIR or the folder's mode and owner as named");
  }
}

std::string utc_text(std::time_t time) {
  std::tm utc{};
  ::gmtime_r(&time, &utc);
  std::array<char, 32> text{};
  std::strftime(text.data(), text.size(), "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text.data();
}

void check_clock(Report& report) {
  const auto now = std::chrono::system_clock::now();
  const std::string what = "system clock";
  if (std::optional<std::string> problem = clock_problem(now)) {
    report.fail(what, *problem,
                "wait for time sync (timedatectl status; systemd-timesyncd or another NTP client "
                "must be running and reach a time server)");
    return;
  }
  report.ok(
      fmt::format("{} plausible ({})", what, utc_text(std::chrono::system_clock::to_time_t(now))));
}

// ---------------------------------------------------------------------------------------------
// keys

std::vector<KeyReport> inspect_or_report(const Config& config, std::FILE* out, bool& failed) {
  failed = false;
  try {
    return inspect_store(config.keys_dir);
  } catch (const keystore::StoreError& error) {
    fmt::print(out, "FAIL key store {}: {}; fix: run as the key store's owner\n", config.keys_dir,
               error.what());
    failed = true;
    return {};
  }
}

std::string type_text(const KeyReport& report) {
  return report.type ? std::string(keystore::to_string(*report.type)) : "?";
}

}  // namespace

int run_check(const ConfigInputs& inputs, std::FILE* out, std::chrono::milliseconds timeout) {
  Report report(out);
  std::optional<Config> config;
  try {
    config = load_config(inputs);
    report.ok("configuration valid");
  } catch (const ConfigError& error) {
    report.fail("configuration", error.what(), config_fix(inputs));
  }
  if (config) {
    // Plugins and the loader log what they skip; the lines below say it already.
    log_init(LogLevel::error);
    check_broker(*config, timeout, report);
    check_key_store(*config, report);
    check_plugins(*config, report);
  }
  check_clock(report);
  std::fflush(out);
  return report.failures() > 0 ? 1 : 0;
}

int run_keys_list(const Config& config, std::FILE* out) {
  bool failed = false;
  const std::vector<KeyReport> reports = inspect_or_report(config, out, failed);
  if (failed) return 1;
  fmt::print(out, "key store: {}\n", config.keys_dir);
  if (reports.empty()) {
    fmt::print(out, "no keys\n");
    return 0;
  }
  struct Row {
    std::array<std::string, 6> cells;
  };
  std::vector<Row> rows;
  rows.push_back({{"USER", "DEVICE", "TYPE", "FINGERPRINT", "MODES(dir/priv/pub)", "STATUS"}});
  for (const KeyReport& report : reports) {
    rows.push_back({{report.folder.user.value_or("-"), report.folder.device, type_text(report),
                     report.fingerprint.empty() ? "-" : report.fingerprint,
                     fmt::format("{}/{}/{}", mode_text(report.dir), mode_text(report.private_key),
                                 mode_text(report.public_key)),
                     to_string(report.status)}});
  }
  std::array<std::size_t, 6> width{};
  for (const Row& row : rows)
    for (std::size_t i = 0; i < width.size(); ++i)
      width[i] = std::max(width[i], row.cells[i].size());
  for (const Row& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < width.size(); ++i) {
      line += i + 1 < width.size() ? fmt::format("{:<{}}  ", row.cells[i], width[i]) : row.cells[i];
    }
    fmt::print(out, "{}\n", line);
  }
  return 0;
}

int run_keys_show(const Config& config, const std::string& device,
                  const std::optional<std::string>& user, std::FILE* out) {
  if (!keystore::is_valid_identifier(device)) {
    fmt::print(stderr, "provision-agent: \"{}\" is not a valid device id\n", device);
    return 1;
  }
  if (user && !keystore::is_valid_identifier(*user)) {
    fmt::print(stderr, "provision-agent: \"{}\" is not a valid user id\n", *user);
    return 1;
  }
  bool failed = false;
  std::vector<KeyReport> reports = inspect_or_report(config, out, failed);
  if (failed) return 1;
  reports.erase(std::remove_if(reports.begin(), reports.end(),
                               [&](const KeyReport& report) {
                                 return report.folder.device != device ||
                                        (user && report.folder.user != user);
                               }),
                reports.end());
  if (reports.empty()) {
    fmt::print(stderr, "provision-agent: no keys for device {}{} in {}\n", device,
               user ? " of user " + *user : "", config.keys_dir);
    return 1;
  }
  bool first = true;
  for (const KeyReport& report : reports) {
    if (!first) fmt::print(out, "\n");
    first = false;
    fmt::print(out, "device:      {}\n", report.folder.device);
    fmt::print(out, "user:        {}\n", report.folder.user.value_or("- (legacy layout)"));
    fmt::print(out, "key type:    {}\n", type_text(report));
    fmt::print(out, "fingerprint: {}\n", report.fingerprint.empty() ? "-" : report.fingerprint);
    fmt::print(out, "status:      {}\n", to_string(report.status));
    fmt::print(out, "files:\n");
    for (const FileState* file : {&report.dir, &report.private_key, &report.public_key,
                                  &report.private_backup, &report.public_backup}) {
      if (!file->exists && (file == &report.private_backup || file == &report.public_backup))
        continue;
      fmt::print(out, "  {} {:<16} {}\n", mode_text(*file),
                 file->exists ? user_name(file->uid) : "-", file->path.string());
    }
    fmt::print(out, "backup:      {}\n",
               report.private_backup.exists ? "yes (previous generation kept)" : "no");
    for (const Problem& problem : report.problems)
      fmt::print(out, "problem:     {}: {}; fix: {}\n", problem.path.string(), problem.why,
                 problem.fix);
    if (!report.public_pem.empty()) {
      fmt::print(out, "public key:\n{}", report.public_pem);
      if (report.public_pem.back() != '\n') fmt::print(out, "\n");
    }
  }
  return 0;
}

int run_keys_verify(const Config& config, std::FILE* out) {
  Report report(out);
  const fs::path root = config.keys_dir;
  if (std::optional<Problem> problem = root_problem(root, config.key_group)) {
    report.fail("key store root " + root.string(), problem->why, problem->fix);
    return 1;
  }
  report.ok(root_summary(root));
  bool failed = false;
  const std::vector<KeyReport> reports = inspect_or_report(config, out, failed);
  if (failed) return 1;
  std::set<std::pair<std::string, std::string>> shown;
  std::size_t with_problems = 0;
  for (const KeyReport& device : reports) {
    if (device.problems.empty()) {
      report.ok(fmt::format("{}: {} {}", device.label(), type_text(device), device.fingerprint));
      continue;
    }
    ++with_problems;
    for (const Problem& problem : device.problems) {
      if (shown.insert({problem.path.string(), problem.why}).second)
        report.fail(problem.path.string(), problem.why, problem.fix);
    }
  }
  fmt::print(out, "{} checked, {} with problems\n", count_devices(reports.size()), with_problems);
  std::fflush(out);
  return report.failures() > 0 ? 1 : 0;
}

}  // namespace pa
