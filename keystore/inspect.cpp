// Read-only inspection of a key store: facts and problem kinds, no wording beyond the parsers'
// own reasons (the CLI words them).
#include "inspect.hpp"

#include <cryptopp/misc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "errors.hpp"
#include "permissions.hpp"

namespace pa::keystore {
namespace {

namespace fs = std::filesystem;

class Inspection {
 public:
  Inspection(const DeviceFolder& folder, uid_t owner) : owner_(owner) {
    report_.folder = folder;
    if (folder.user) report_.user_folder = file_facts(folder.dir.parent_path(), true);
    report_.dir = file_facts(folder.dir, true);
    report_.private_key = file_facts(folder.dir / kPrivateKeyFile, false);
    report_.public_key = file_facts(folder.dir / kPublicKeyFile, false);
    report_.private_backup = file_facts(folder.dir / kPrivateBackupFile, false);
    report_.public_backup = file_facts(folder.dir / kPublicBackupFile, false);
  }

  DeviceReport run() {
    check_access(KeyFile::user_folder, report_.user_folder, 077, 0700);
    check_access(KeyFile::folder, report_.dir, 077, 0700);
    check_access(KeyFile::private_key, report_.private_key, 077, 0600);
    check_access(KeyFile::public_key, report_.public_key, 022, 0644);
    check_access(KeyFile::private_backup, report_.private_backup, 077, 0600);
    check_access(KeyFile::public_backup, report_.public_backup, 022, 0600);
    check_private_key();
    check_public_key();
    check_backup();
    return std::move(report_);
  }

 private:
  KeyProblem& add(ProblemKind kind, KeyFile file, const FileFacts& facts) {
    KeyProblem problem{};
    problem.kind = kind;
    problem.file = file;
    problem.path = facts.path;
    problem.owner = facts.uid;
    problem.expected_owner = owner_;
    report_.problems.push_back(std::move(problem));
    return report_.problems.back();
  }

  void check_access(KeyFile file, const FileFacts& facts, mode_t forbidden, mode_t wanted) {
    if (!facts.exists || !facts.plain) return;
    if ((facts.mode & forbidden) != 0) {
      KeyProblem& problem = add(ProblemKind::loose_mode, file, facts);
      problem.mode = facts.mode;
      problem.forbidden = forbidden;
      problem.wanted = wanted;
    }
    if (facts.uid != owner_) add(ProblemKind::wrong_owner, file, facts);
  }

  // The file's text without following links; the problem is recorded when it cannot be read.
  std::optional<std::string> read(KeyFile file, const FileFacts& facts) {
    if (facts.exists && !facts.plain) {
      add(ProblemKind::not_regular, file, facts);
      return std::nullopt;
    }
    try {
      return read_key_file_no_follow(facts.path);
    } catch (const StoreError& error) {
      add(ProblemKind::unreadable, file, facts).detail = error.what();
      return std::nullopt;
    }
  }

  // The pair of a private key's text, which is wiped whatever happens; the parser's reason in
  // `error` when it is not a usable key.
  static std::optional<KeyPair> parse_private(std::string text, std::string& error) {
    std::optional<KeyPair> pair;
    try {
      pair = key_pair_from_private_pem(Secret::take(std::move(text)).view());
    } catch (const KeyError& e) {
      error = e.what();
    }
    return pair;
  }

  void check_private_key() {
    if (!report_.private_key.exists) {
      add(ProblemKind::missing, KeyFile::private_key, report_.private_key);
      return;
    }
    std::optional<std::string> text = read(KeyFile::private_key, report_.private_key);
    if (!text) return;
    std::string error;
    const std::optional<KeyPair> pair = parse_private(std::move(*text), error);
    if (!pair) {
      add(ProblemKind::not_a_key, KeyFile::private_key, report_.private_key).detail = error;
      return;
    }
    report_.private_key_usable = true;
    report_.type = pair->type;
    report_.public_pem = pair->public_pem;
    report_.fingerprint = fingerprint(pair->public_pem);
  }

  void check_public_key() {
    const FileFacts& facts = report_.public_key;
    if (!facts.exists) {
      if (report_.private_key_usable) add(ProblemKind::missing, KeyFile::public_key, facts);
      return;
    }
    const std::optional<std::string> text = read(KeyFile::public_key, facts);
    if (!text) return;
    std::optional<std::string> stored;
    try {
      stored = fingerprint(*text);
    } catch (const KeyError& error) {
      add(ProblemKind::not_a_key, KeyFile::public_key, facts).detail = error.what();
      return;
    }
    if (report_.private_key_usable) {
      if (*stored != report_.fingerprint) {
        KeyProblem& problem = add(ProblemKind::mismatch, KeyFile::public_key, facts);
        problem.fingerprint = *stored;
        problem.expected_fingerprint = report_.fingerprint;
      }
      return;
    }
    // Nothing better to show than the stored public key.
    report_.public_pem = *text;
    report_.fingerprint = *stored;
    try {
      report_.type = public_key_type(*text);
    } catch (const KeyError&) {
    }
  }

  void check_backup() {
    if (!report_.private_backup.exists) return;
    std::optional<std::string> text = read(KeyFile::private_backup, report_.private_backup);
    if (!text) return;
    std::string error;
    if (!parse_private(std::move(*text), error))
      add(ProblemKind::not_a_key, KeyFile::private_backup, report_.private_backup).detail = error;
  }

  uid_t owner_;
  DeviceReport report_;
};

}  // namespace

FileFacts file_facts(const fs::path& path, bool folder) {
  FileFacts facts;
  facts.path = path;
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) return facts;
  facts.exists = true;
  facts.plain = folder ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode);
  facts.mode = st.st_mode & 07777;
  facts.uid = st.st_uid;
  return facts;
}

std::string_view to_string(KeyStatus status) noexcept {
  for (const auto& [value, name] : kKeyStatusNames)
    if (value == status) return name;
  return "ok";
}

KeyStatus status_of(const KeyProblem& problem) noexcept {
  if (problem.kind == ProblemKind::loose_mode) return KeyStatus::loose_mode;
  if (problem.kind == ProblemKind::wrong_owner) return KeyStatus::wrong_owner;
  switch (problem.file) {
    case KeyFile::private_key:
      return problem.kind == ProblemKind::missing ? KeyStatus::missing_private : KeyStatus::corrupt;
    case KeyFile::private_backup:
    case KeyFile::public_backup:
      return KeyStatus::bad_backup;
    case KeyFile::public_key:
    case KeyFile::folder:
    case KeyFile::user_folder:
      return KeyStatus::mismatch;
  }
  return KeyStatus::mismatch;
}

KeyStatus DeviceReport::status() const noexcept {
  KeyStatus worst = KeyStatus::ok;
  for (const KeyProblem& problem : problems) worst = std::min(worst, status_of(problem));
  return worst;
}

std::string DeviceReport::label() const {
  return folder.user ? *folder.user + "/" + folder.device : folder.device;
}

DeviceReport inspect_device(const DeviceFolder& folder, uid_t owner) {
  return Inspection(folder, owner).run();
}

uid_t expected_owner(const fs::path& root) {
  const uid_t euid = ::geteuid();
  if (euid != 0) return euid;
  struct stat st {};
  return ::stat(root.c_str(), &st) == 0 ? st.st_uid : euid;
}

std::vector<DeviceReport> inspect_store(const fs::path& root) {
  const uid_t owner = expected_owner(root);
  std::vector<DeviceReport> reports;
  for (const DeviceFolder& folder : list_device_folders(root))
    reports.push_back(inspect_device(folder, owner));
  return reports;
}

std::optional<RootProblem> inspect_root(const fs::path& root,
                                        const std::optional<std::string>& key_group_name) {
  using Kind = RootProblem::Kind;
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::nullopt;
    return RootProblem{Kind::unreadable, root, std::strerror(errno), {}};
  }
  if (!S_ISDIR(st.st_mode)) return RootProblem{Kind::not_a_folder, root, {}, {}};
  std::optional<gid_t> key_group;
  try {
    if (key_group_name) key_group = resolve_group(*key_group_name);
  } catch (const StoreError& error) {
    return RootProblem{Kind::unknown_group, root, error.what(), {}};
  }
  // Root inspecting the service user's store: the owner is that user, only the modes count.
  if (::geteuid() == 0 && st.st_uid != 0) st.st_uid = 0;
  try {
    check_private_stat(st, root, PathKind::folder, key_group);
  } catch (const PermissionError& error) {
    return RootProblem{Kind::permission, root, error.problem(), error.fix()};
  }
  return std::nullopt;
}

}  // namespace pa::keystore
