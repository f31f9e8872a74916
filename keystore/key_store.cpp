#include "key_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cryptopp/misc.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "file_util.hpp"
#include "identifier.hpp"

namespace pa::keystore {
namespace fs = std::filesystem;

namespace {

constexpr const char* kPrivateFile = "sensor_private.pem";
constexpr const char* kPublicFile = "sensor_public.pem";
constexpr const char* kPrivateBackup = "sensor_private.prev.pem";
constexpr const char* kPublicBackup = "sensor_public.prev.pem";
constexpr mode_t kFolderMode = 0700;
constexpr mode_t kPrivateMode = 0600;
constexpr mode_t kPublicMode = 0644;
constexpr mode_t kBackupMode = 0600;

[[noreturn]] void throw_store_error(const std::string& what, const std::exception& cause) {
  throw StoreError(what + ": " + cause.what());
}

[[noreturn]] void throw_errno(const std::string& what, int error) {
  throw StoreError(what + ": " + std::strerror(error));
}

// Overwrites a secret held in a std::string when it goes out of scope.
class WipeOnExit {
 public:
  explicit WipeOnExit(std::string& secret) : secret_(secret) {}
  WipeOnExit(const WipeOnExit&) = delete;
  WipeOnExit& operator=(const WipeOnExit&) = delete;
  ~WipeOnExit() {
    CryptoPP::SecureWipeBuffer(reinterpret_cast<CryptoPP::byte*>(secret_.data()), secret_.size());
  }

 private:
  std::string& secret_;
};

// The message names what is wrong and the command that fixes it (SPEC section 5). `fix_mode` is
// the mode the chmod suggests; by default the current one without group and world write.
void check_private_path(const fs::path& path, const std::string& description,
                        std::optional<mode_t> fix_mode = std::nullopt) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    throw_errno(fmt::format("cannot check {}", path.string()), errno);
  }
  std::vector<std::string> problems;
  std::vector<std::string> fixes;
  const uid_t euid = ::geteuid();
  if (st.st_uid != euid && st.st_uid != 0) {
    problems.push_back(fmt::format("is owned by uid {}, not {}", st.st_uid, euid));
    fixes.push_back(fmt::format("chown {} {}", euid, path.string()));
  }
  const bool group = (st.st_mode & S_IWGRP) != 0;
  const bool world = (st.st_mode & S_IWOTH) != 0;
  if (group || world) {
    const char* who = group && world ? "group- and world-writable"
                      : group        ? "group-writable"
                                     : "world-writable";
    problems.push_back(fmt::format("is {} (mode {:04o})", who, st.st_mode & 07777));
    fixes.push_back(
        fmt::format("chmod {:o} {}", fix_mode.value_or(st.st_mode & 07755), path.string()));
  }
  if (problems.empty()) return;
  std::string message = description + path.string();
  for (std::size_t i = 0; i < problems.size(); ++i) {
    message += (i == 0 ? " " : ", and ") + problems[i];
  }
  message += "; fix: ";
  for (std::size_t i = 0; i < fixes.size(); ++i) message += (i == 0 ? "" : " && ") + fixes[i];
  throw PermissionError(message);
}

// true when `path` is a real folder, false when it does not exist. A symlink or a file in its
// place is an error: the store never follows links out of itself.
bool is_store_folder(const fs::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return false;
    throw_errno(fmt::format("cannot check {}", path.string()), errno);
  }
  if (!S_ISDIR(st.st_mode)) {
    throw StoreError(fmt::format("{} is not a folder ({}); the key store does not follow it",
                                 path.string(), S_ISLNK(st.st_mode) ? "a symlink" : "a file"));
  }
  return true;
}

// Creates a store folder 0700 (umask-proof) unless it exists; true when it was created.
bool ensure_store_folder(const fs::path& path) {
  if (::mkdir(path.c_str(), kFolderMode) == 0) {
    if (::chmod(path.c_str(), kFolderMode) != 0) {
      throw_errno(fmt::format("cannot set the mode of {}", path.string()), errno);
    }
    return true;
  }
  if (errno != EEXIST) throw_errno(fmt::format("cannot create {}", path.string()), errno);
  is_store_folder(path);
  return false;
}

bool is_regular_file_no_follow(const fs::path& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// Reads a key file without following a symlink; nullopt when it does not exist.
std::optional<std::string> read_key_file(const fs::path& path) {
  // O_NONBLOCK: a FIFO planted in place of a key must not hang the agent.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    if (errno == ELOOP)
      throw StoreError(fmt::format("{} is a symlink; not followed", path.string()));
    throw_errno(fmt::format("cannot open {}", path.string()), errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno(fmt::format("cannot stat {}", path.string()), errno);
  if (!S_ISREG(st.st_mode)) throw StoreError(fmt::format("{} is not a file", path.string()));
  std::string content;
  std::array<char, 4096> buffer{};
  for (;;) {
    const ssize_t got = ::read(fd.get(), buffer.data(), buffer.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      CryptoPP::SecureWipeBuffer(reinterpret_cast<CryptoPP::byte*>(content.data()), content.size());
      throw_errno(fmt::format("cannot read {}", path.string()), errno);
    }
    if (got == 0) break;
    content.append(buffer.data(), static_cast<std::size_t>(got));
  }
  CryptoPP::SecureWipeArray(buffer.data(), buffer.size());
  return content;
}

void unlink_if_present(const fs::path& path) {
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    throw_errno(fmt::format("cannot remove {}", path.string()), errno);
  }
}

// Temporary files of an interrupted write: `.sensor_*.tmp-*` (see write_temp_file).
void remove_stale_temps(const fs::path& dir) {
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(".sensor_", 0) == 0 && name.find(".tmp-") != std::string::npos) {
      unlink_if_present(it->path());
    }
  }
  if (ec) throw_errno(fmt::format("cannot list {}", dir.string()), ec.value());
}

bool same_public_key(const std::string& a, const std::string& b) {
  try {
    return fingerprint(a) == fingerprint(b);
  } catch (const KeyError&) {
    return false;
  }
}

fs::file_time_type modified(const fs::path& path) {
  std::error_code ec;
  const fs::file_time_type time = fs::last_write_time(path, ec);
  if (ec) throw_errno(fmt::format("cannot stat {}", path.string()), ec.value());
  return time;
}

}  // namespace

void require_private_path(const fs::path& path) {
  check_private_path(path, "");
}

KeyStore::KeyStore(fs::path root) : root_(std::move(root)) {
  if (root_.empty()) throw StoreError("key store root is empty");
  struct stat st {};
  if (::stat(root_.c_str(), &st) != 0) {
    if (errno != ENOENT)
      throw_errno(fmt::format("cannot check key store root {}", root_.string()), errno);
    try {
      create_private_dirs(root_, kFolderMode);
    } catch (const std::system_error& e) {
      throw_store_error(fmt::format("cannot create key store root {}", root_.string()), e);
    }
  } else if (!S_ISDIR(st.st_mode)) {
    throw StoreError(fmt::format("key store root {} is not a folder", root_.string()));
  }
  check_private_path(root_, "key store root ", kFolderMode);
}

fs::path KeyStore::device_dir(const std::optional<std::string>& user,
                              const std::string& device) const {
  if (!is_valid_identifier(device)) throw std::invalid_argument("invalid device id");
  if (!user) return root_ / device;
  if (!is_valid_identifier(*user)) throw std::invalid_argument("invalid user id");
  return root_ / *user / device;
}

bool KeyStore::has_keys(const std::optional<std::string>& user, const std::string& device) const {
  const fs::path dir = device_dir(user, device);
  struct stat st {};
  if (user && (::lstat((root_ / *user).c_str(), &st) != 0 || !S_ISDIR(st.st_mode))) return false;
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
  return is_regular_file_no_follow(dir / kPrivateFile);
}

std::optional<StoredKey> KeyStore::load(const std::optional<std::string>& user,
                                        const std::string& device) const {
  const fs::path dir = device_dir(user, device);
  if (user && !is_store_folder(root_ / *user)) return std::nullopt;
  if (!is_store_folder(dir)) return std::nullopt;
  const fs::path private_path = dir / kPrivateFile;
  std::optional<std::string> private_pem = read_key_file(private_path);
  if (!private_pem) return std::nullopt;
  WipeOnExit wipe(*private_pem);

  KeyPair pair;
  try {
    pair = key_pair_from_private_pem(*private_pem);
  } catch (const KeyError& e) {
    throw_store_error(fmt::format("{} is not a usable private key", private_path.string()), e);
  }
  WipeOnExit wipe_pair(pair.private_pem);

  StoredKey stored{pair.type, pair.public_pem, fingerprint(pair.public_pem), {}, false};
  const fs::path public_path = dir / kPublicFile;
  std::optional<std::string> public_pem;
  try {
    public_pem = read_key_file(public_path);
  } catch (const StoreError&) {
    // A symlink or special file in place of the public key: replaced below like a mismatch.
  }
  if (!public_pem || !same_public_key(*public_pem, pair.public_pem)) {
    try {
      write_file_atomic(public_path, pair.public_pem, kPublicMode);
    } catch (const std::system_error& e) {
      throw_store_error(fmt::format("cannot repair {}", public_path.string()), e);
    }
    stored.repaired = true;
  }
  stored.created = modified(private_path);
  return stored;
}

StoredKey KeyStore::store(const std::optional<std::string>& user, const std::string& device,
                          const KeyPair& pair, bool keep_backup) {
  const fs::path dir = device_dir(user, device);

  // What is written is derived from the private key, so the two files always match and are
  // always PKCS#8 / SubjectPublicKeyInfo, whatever encoding the caller used.
  KeyPair derived;
  try {
    derived = key_pair_from_private_pem(pair.private_pem);
  } catch (const KeyError& e) {
    throw_store_error("refusing to store an unusable private key", e);
  }
  WipeOnExit wipe_derived(derived.private_pem);
  if (!same_public_key(pair.public_pem, derived.public_pem)) {
    throw StoreError("refusing to store a pair whose public key does not match its private key");
  }

  const fs::path private_path = dir / kPrivateFile;
  const fs::path public_path = dir / kPublicFile;
  auto step = [this](WriteStep done) {
    if (step_hook_) step_hook_(done);
  };

  fs::path private_temp;
  fs::path public_temp;
  try {
    if (user && ensure_store_folder(root_ / *user)) fsync_dir(root_);
    if (ensure_store_folder(dir)) fsync_dir(dir.parent_path());
    remove_stale_temps(dir);
    if (keep_backup) {
      if (std::optional<std::string> current = read_key_file(private_path)) {
        WipeOnExit wipe_current(*current);
        // The backup pair is made consistent the same way: its public half comes from its private.
        std::optional<std::string> current_public;
        try {
          KeyPair previous = key_pair_from_private_pem(*current);
          WipeOnExit wipe_previous(previous.private_pem);
          current_public = previous.public_pem;
        } catch (const KeyError&) {
          current_public = read_key_file(public_path);
        }
        write_file_atomic(dir / kPrivateBackup, *current, kBackupMode);
        if (current_public) {
          write_file_atomic(dir / kPublicBackup, *current_public, kBackupMode);
        } else {
          unlink_if_present(dir / kPublicBackup);
        }
        step(WriteStep::backup_written);
      }
    }
    private_temp = write_temp_file(private_path, derived.private_pem, kPrivateMode);
    step(WriteStep::private_temp_synced);
    public_temp = write_temp_file(public_path, derived.public_pem, kPublicMode);
    step(WriteStep::public_temp_synced);
    rename_file(private_temp, private_path);
    private_temp.clear();
    step(WriteStep::private_renamed);
    rename_file(public_temp, public_path);
    public_temp.clear();
    step(WriteStep::public_renamed);
    fsync_dir(dir);
  } catch (...) {
    if (!private_temp.empty()) ::unlink(private_temp.c_str());
    if (!public_temp.empty()) ::unlink(public_temp.c_str());
    try {
      throw;
    } catch (const std::system_error& e) {
      throw_store_error(fmt::format("cannot store the key pair in {}", dir.string()), e);
    }
  }
  return StoredKey{derived.type, derived.public_pem, fingerprint(derived.public_pem),
                   modified(private_path), false};
}

bool KeyStore::remove(const std::optional<std::string>& user, const std::string& device) {
  const fs::path dir = device_dir(user, device);
  if (user && !is_store_folder(root_ / *user)) return false;
  if (!is_store_folder(dir)) return false;
  bool removed = false;
  // The private key first: from then on the device has no keys, whatever happens next.
  for (const char* name : {kPrivateFile, kPublicFile, kPrivateBackup, kPublicBackup}) {
    const fs::path path = dir / name;
    if (::unlink(path.c_str()) == 0) {
      removed = true;
    } else if (errno != ENOENT) {
      throw_errno(fmt::format("cannot remove {}", path.string()), errno);
    }
  }
  remove_stale_temps(dir);
  try {
    // A folder that still holds something else (a legacy folder that is also a user's) stays.
    if (::rmdir(dir.c_str()) == 0) {
      fsync_dir(dir.parent_path());
    } else if (errno != ENOTEMPTY && errno != EEXIST) {
      throw_errno(fmt::format("cannot remove {}", dir.string()), errno);
    } else if (removed) {
      fsync_dir(dir);
    }
  } catch (const std::system_error& e) {
    throw_store_error(fmt::format("cannot remove the keys in {}", dir.string()), e);
  }
  return removed;
}

std::vector<fs::path> KeyStore::private_key_candidates(const std::string& device) const {
  if (!is_valid_identifier(device)) throw std::invalid_argument("invalid device id");
  // A user folder is one holding `<device>/sensor_private.pem`; a legacy device folder holds key
  // files, never folders, so it never matches (even for a device named like a key file).
  auto holds_key = [](const fs::path& folder) {
    struct stat st {};
    return ::lstat(folder.c_str(), &st) == 0 && S_ISDIR(st.st_mode) &&
           is_regular_file_no_follow(folder / kPrivateFile);
  };
  std::vector<fs::path> candidates;
  std::error_code ec;
  for (fs::directory_iterator it(root_, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (!is_valid_identifier(name)) continue;
    std::error_code type_ec;
    if (!it->is_directory(type_ec) || it->is_symlink(type_ec)) continue;
    if (holds_key(it->path() / device)) candidates.push_back(it->path() / device / kPrivateFile);
  }
  if (ec) throw_errno(fmt::format("cannot list key store root {}", root_.string()), ec.value());
  std::sort(candidates.begin(), candidates.end());
  if (holds_key(root_ / device)) candidates.push_back(root_ / device / kPrivateFile);
  return candidates;
}

namespace {

// A real folder (not a symlink) whose name is an identifier.
bool is_identifier_folder(const fs::directory_entry& entry) {
  if (!is_valid_identifier(entry.path().filename().string())) return false;
  std::error_code ec;
  return entry.is_directory(ec) && !entry.is_symlink(ec);
}

bool holds_key_file(const fs::path& dir) {
  return is_regular_file_no_follow(dir / kPrivateKeyFile) ||
         is_regular_file_no_follow(dir / kPublicKeyFile);
}

// The identifier-named real folders in `dir`, sorted.
std::vector<fs::path> identifier_folders(const fs::path& dir) {
  std::vector<fs::path> folders;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (is_identifier_folder(*it)) folders.push_back(it->path());
  }
  if (ec) throw_errno(fmt::format("cannot list {}", dir.string()), ec.value());
  std::sort(folders.begin(), folders.end());
  return folders;
}

}  // namespace

std::vector<DeviceFolder> list_device_folders(const fs::path& root) {
  if (!is_store_folder(root)) return {};
  std::vector<DeviceFolder> legacy;
  std::vector<DeviceFolder> owned;
  for (const fs::path& folder : identifier_folders(root)) {
    const std::string name = folder.filename().string();
    // A legacy device folder holds key files; a user folder holds device folders. A name can be
    // both (a legacy device called like a user), so both are looked at.
    if (holds_key_file(folder)) legacy.push_back({std::nullopt, name, folder});
    for (const fs::path& device : identifier_folders(folder)) {
      if (holds_key_file(device)) owned.push_back({name, device.filename().string(), device});
    }
  }
  legacy.insert(legacy.end(), owned.begin(), owned.end());
  return legacy;
}

std::optional<std::string> read_key_file_no_follow(const fs::path& path) {
  return read_key_file(path);
}

}  // namespace pa::keystore
