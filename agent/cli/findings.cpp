// The words for what the key store inspection found (keystore/inspect.hpp): each problem kind's
// reason and the command that fixes it.
#include "cli/findings.hpp"

#include <fmt/format.h>
#include <pwd.h>
#include <sys/stat.h>

#include <array>
#include <set>

#include "protocol/protocol.hpp"

namespace pa::cli {
namespace {

using keystore::KeyFile;
using keystore::ProblemKind;

std::string who_has(mode_t bits) {
  const bool group = (bits & 070) != 0;
  const bool world = (bits & 007) != 0;
  return group && world ? "group and world" : group ? "group" : "world";
}

const char* noun(KeyFile file) {
  switch (file) {
    case KeyFile::user_folder:
    case KeyFile::folder:
      return "a key store folder";
    case KeyFile::private_key:
    case KeyFile::private_backup:
      return "a private key";
    case KeyFile::public_key:
      return "a public key";
    case KeyFile::public_backup:
      return "a backup public key";
  }
  return "a key file";
}

std::string regenerate_fix(const keystore::DeviceReport& device) {
  return fmt::format("rm -r {} && provision-agent send {} {}{}", device.dir.path.string(),
                     kActionGenerate, device.folder.device,
                     device.folder.user ? " --user " + *device.folder.user : "");
}

std::string derive_fix(const keystore::DeviceReport& device) {
  return fmt::format(
      "openssl pkey -in {} -pubout -out {} (or let the agent rewrite it on next use)",
      device.private_key.path.string(), device.public_key.path.string());
}

}  // namespace

void Findings::ok(const std::string& what) {
  fmt::print(out_, "OK   {}\n", what);
}

void Findings::fail(const std::string& what, const std::string& why, const std::string& fix) {
  ++failures_;
  fmt::print(out_, "FAIL {}: {}; fix: {}\n", what, why, fix);
}

std::string user_name(uid_t uid) {
  struct passwd entry {};
  struct passwd* found = nullptr;
  std::array<char, 2048> buffer{};
  if (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) == 0 && found)
    return found->pw_name;
  return std::to_string(uid);
}

std::string mode_text(const keystore::FileFacts& file) {
  return file.exists ? fmt::format("{:04o}", file.mode) : "----";
}

std::string count_devices(std::size_t count) {
  return fmt::format("{} device{}", count, count == 1 ? "" : "s");
}

std::string root_summary(const std::filesystem::path& root) {
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0)
    return fmt::format("key store root {} does not exist yet (the agent creates it 0700)",
                       root.string());
  return fmt::format("key store root {} (mode {:04o}, owner {})", root.string(), st.st_mode & 07777,
                     user_name(st.st_uid));
}

Wording word(const keystore::DeviceReport& device, const keystore::KeyProblem& problem) {
  const std::string path = problem.path.string();
  switch (problem.kind) {
    case ProblemKind::loose_mode:
      return {fmt::format("mode {:04o} gives {} {}; {} must be {:04o}", problem.mode,
                          who_has(problem.mode & problem.forbidden),
                          (problem.forbidden & 044) != 0 ? "access" : "write access",
                          noun(problem.file), problem.wanted),
              fmt::format("chmod {:o} {}", problem.wanted, path)};
    case ProblemKind::wrong_owner:
      return {fmt::format("owned by {} (uid {}), not {} (uid {})", user_name(problem.owner),
                          problem.owner, user_name(problem.expected_owner), problem.expected_owner),
              fmt::format("chown {} {}", user_name(problem.expected_owner), path)};
    case ProblemKind::not_regular:
      return {"is not a regular file (a symlink or special file); the agent does not follow it",
              fmt::format("rm {}", path)};
    case ProblemKind::unreadable:
      return {problem.detail,
              fmt::format("run as the key store's owner: sudo -u {} provision-agent keys verify",
                          user_name(problem.owner))};
    case ProblemKind::missing:
      if (problem.file == KeyFile::private_key)
        return {"missing (only the public key is there)", regenerate_fix(device)};
      return {"missing", derive_fix(device)};
    case ProblemKind::not_a_key:
      switch (problem.file) {
        case KeyFile::private_key:
          return {fmt::format("not a usable private key ({}){}", problem.detail,
                              device.private_backup.exists
                                  ? fmt::format("; the previous generation is in {}",
                                                keystore::kPrivateBackupFile)
                                  : ""),
                  regenerate_fix(device)};
        case KeyFile::private_backup:
          return {fmt::format("the previous generation is not a usable private key ({})",
                              problem.detail),
                  fmt::format("rm -f {} {}", device.private_backup.path.string(),
                              device.public_backup.path.string())};
        default:
          return {"not a public key PEM (BEGIN PUBLIC KEY)",
                  device.private_key_usable ? derive_fix(device) : regenerate_fix(device)};
      }
    case ProblemKind::mismatch:
      return {fmt::format("does not match the private key (it is {}, the private key's is {})",
                          problem.fingerprint, problem.expected_fingerprint),
              derive_fix(device)};
  }
  return {problem.detail, "provision-agent keys show " + device.folder.device};
}

Wording word(const keystore::RootProblem& problem) {
  using Kind = keystore::RootProblem::Kind;
  const std::string path = problem.path.string();
  switch (problem.kind) {
    case Kind::unreadable:
      return {fmt::format("cannot check it: {}", problem.detail), fmt::format("ls -ld {}", path)};
    case Kind::not_a_folder:
      return {"is not a folder",
              fmt::format("mv {0} {0}.old (the agent creates the folder)", path)};
    case Kind::unknown_group:
      return {problem.detail, "create the group (groupadd) or fix PROVISION_KEY_GROUP"};
    case Kind::permission:
      return {problem.detail, problem.fix};
  }
  return {problem.detail, problem.fix};
}

std::vector<WordedProblem> distinct_problems(const std::vector<keystore::DeviceReport>& devices,
                                             bool about_access) {
  std::vector<WordedProblem> problems;
  std::set<std::pair<std::string, std::string>> seen;
  for (const keystore::DeviceReport& device : devices) {
    for (const keystore::KeyProblem& problem : device.problems) {
      if (problem.about_access() != about_access) continue;
      Wording wording = word(device, problem);
      if (seen.insert({problem.path.string(), wording.why}).second)
        problems.push_back({problem.path.string(), std::move(wording)});
    }
  }
  return problems;
}

}  // namespace pa::cli
