#include "key_store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cryptopp/misc.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <system_error>
#include <utility>

#include "identifier.hpp"
#include "secret.hpp"

namespace pa::keystore {
namespace fs = std::filesystem;

namespace {

// Every folder below the root is opened so: a symlink (or a file) in its place fails with ENOTDIR.
constexpr int kFolderFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

struct Modes {
  mode_t folder;
  mode_t private_key;
  mode_t public_key;
  mode_t backup;
};

// SPEC section 5: without a key group, nothing but the public keys is readable by anyone else;
// with one, that group reads folders, private keys and backups, and nobody writes but us.
Modes modes_for(std::optional<gid_t> key_group) {
  if (key_group) return Modes{0750, 0640, 0644, 0640};
  return Modes{0700, 0600, 0644, 0600};
}

[[noreturn]] void throw_store_error(const std::string& what, const std::exception& cause) {
  throw StoreError(what + ": " + cause.what());
}

[[noreturn]] void throw_errno(const std::string& what, int error) {
  throw StoreError(what + ": " + std::strerror(error));
}

// The lock of a top-level name, held while a device folder under it changes: shared for a user's
// device (devices of one user change side by side), exclusive for a legacy device folder, which
// is the top-level name itself.
struct NameHold {
  NameHold(std::shared_mutex& lock, bool user_device) {
    if (user_device)
      shared = std::shared_lock<std::shared_mutex>(lock);
    else
      unique = std::unique_lock<std::shared_mutex>(lock);
  }
  std::shared_lock<std::shared_mutex> shared;
  std::unique_lock<std::shared_mutex> unique;
};

// What is at `name` in a folder, for messages ("a symlink"), without following it.
const char* describe_entry(int dir_fd, const std::string& name) {
  struct stat st {};
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return "unreadable";
  if (S_ISLNK(st.st_mode)) return "a symlink";
  if (S_ISREG(st.st_mode)) return "a file";
  return "a special file";
}

// The folder `name` in `parent_fd`, opened without following a symlink. Empty when it does not
// exist. Anything else in its place (a symlink, a file): StoreError when `strict`, else empty
// (and with `strict` off any error gives empty: lookups that skip what they cannot use).
UniqueFd open_folder(int parent_fd, const std::string& name, const fs::path& shown, bool strict) {
  UniqueFd fd(::openat(parent_fd, name.c_str(), kFolderFlags));
  if (fd) return fd;
  const int error = errno;
  if (error == ENOENT || !strict) return {};
  if (error == ENOTDIR || error == ELOOP) {
    throw StoreError(fmt::format("{} is not a folder ({}); the key store does not follow it",
                                 shown.string(), describe_entry(parent_fd, name)));
  }
  throw_errno(fmt::format("cannot open {}", shown.string()), error);
}

bool is_file_at(int dir_fd, const char* name) {
  struct stat st {};
  return ::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

bool exists_at(int dir_fd, const char* name) {
  struct stat st {};
  return ::fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

// Gives what the store makes or rewrites its group (first) and its mode.
void set_group_and_mode(int fd, mode_t mode, std::optional<gid_t> group, const fs::path& shown) {
  if (group && ::fchown(fd, static_cast<uid_t>(-1), *group) != 0)
    throw_errno(fmt::format("cannot give {} to group {}", shown.string(), group_name(*group)),
                errno);
  if (::fchmod(fd, mode) != 0)
    throw_errno(fmt::format("cannot set the mode of {}", shown.string()), errno);
}

// A folder of ours on a write path gets the store's folder mode and group: one made before the
// key group was set becomes readable by the group, one loosened by hand is closed again.
void adopt_folder(int fd, mode_t mode, std::optional<gid_t> group, const fs::path& shown) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) throw_errno(fmt::format("cannot check {}", shown.string()), errno);
  if (st.st_uid != ::geteuid()) return;
  if ((st.st_mode & 07777) != mode || (group && st.st_gid != *group))
    set_group_and_mode(fd, mode, group, shown);
}

void sync_folder(int dir_fd, const fs::path& shown) {
  try {
    fsync_folder(dir_fd, shown);
  } catch (const std::system_error& e) {
    throw_store_error(fmt::format("cannot sync {}", shown.string()), e);
  }
}

// The folder `name` in `parent_fd`, made if missing, open. A new folder is born owner-only, given
// to the group, chmod'ed, and its parent fsynced. Another worker making it at the same moment
// (EEXIST) is fine.
UniqueFd make_folder(int parent_fd, const std::string& name, const fs::path& shown, mode_t mode,
                     std::optional<gid_t> group) {
  for (int attempt = 0; attempt < 10; ++attempt) {
    if (::mkdirat(parent_fd, name.c_str(), 0700) == 0) {
      UniqueFd fd = open_folder(parent_fd, name, shown, true);
      if (!fd) continue;  // removed at once by a concurrent remove(): make it again
      set_group_and_mode(fd.get(), mode, group, shown);
      sync_folder(parent_fd, shown.parent_path());
      return fd;
    }
    if (errno != EEXIST) throw_errno(fmt::format("cannot create {}", shown.string()), errno);
    UniqueFd fd = open_folder(parent_fd, name, shown, true);
    if (!fd) continue;  // removed between mkdirat and openat
    adopt_folder(fd.get(), mode, group, shown);
    return fd;
  }
  throw StoreError(fmt::format("cannot create {}: it keeps disappearing", shown.string()));
}

// Creates the root and its missing parents with the folder mode and group. Parents may be
// symlinks (/var/run); the root itself never is (it is opened with O_NOFOLLOW afterwards).
void create_root(const fs::path& root, mode_t mode, std::optional<gid_t> group) {
  const fs::path normal = root.lexically_normal();
  UniqueFd parent(::open(normal.is_absolute() ? "/" : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!parent) throw_errno(fmt::format("cannot create key store root {}", root.string()), errno);
  fs::path shown = normal.is_absolute() ? fs::path("/") : fs::path();
  for (const fs::path& part : normal.relative_path()) {
    if (part.empty()) continue;  // trailing separator
    shown /= part;
    const std::string name = part.string();
    if (::mkdirat(parent.get(), name.c_str(), 0700) == 0) {
      UniqueFd fd(::openat(parent.get(), name.c_str(), kFolderFlags));
      if (!fd) throw_errno(fmt::format("cannot open {}", shown.string()), errno);
      set_group_and_mode(fd.get(), mode, group, shown);
      sync_folder(parent.get(), shown.parent_path());
      parent = std::move(fd);
      continue;
    }
    if (errno != EEXIST) throw_errno(fmt::format("cannot create {}", shown.string()), errno);
    UniqueFd fd(::openat(parent.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw_errno(fmt::format("cannot open {}", shown.string()), errno);
    parent = std::move(fd);
  }
}

struct DirCloser {
  void operator()(DIR* dir) const noexcept { ::closedir(dir); }
};

struct DirEntry {
  std::string name;
  bool folder;  // a real folder, not a symlink to one
};

// The entries of the folder `dir_fd` but . and .., sorted by name.
std::vector<DirEntry> list_entries(int dir_fd, const fs::path& shown) {
  UniqueFd own(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!own) throw_errno(fmt::format("cannot list {}", shown.string()), errno);
  std::unique_ptr<DIR, DirCloser> dir(::fdopendir(own.get()));
  if (!dir) throw_errno(fmt::format("cannot list {}", shown.string()), errno);
  own.release();  // closedir closes it
  std::vector<DirEntry> entries;
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(dir.get());
    if (!entry) {
      if (errno != 0) throw_errno(fmt::format("cannot list {}", shown.string()), errno);
      break;
    }
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    bool folder = entry->d_type == DT_DIR;
    if (entry->d_type == DT_UNKNOWN) {  // file systems that do not fill d_type
      struct stat st {};
      folder =
          ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
    }
    entries.push_back({name, folder});
  }
  std::sort(entries.begin(), entries.end(),
            [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return entries;
}

// Reads a key file in a folder without following a symlink; nullopt when it does not exist.
std::optional<std::string> read_key_file_at(int dir_fd, const char* name, const fs::path& shown,
                                            struct stat* status = nullptr) {
  // O_NONBLOCK: a FIFO planted in place of a key must not hang the agent.
  UniqueFd fd(::openat(dir_fd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    if (errno == ELOOP)
      throw StoreError(fmt::format("{} is a symlink; not followed", shown.string()));
    throw_errno(fmt::format("cannot open {}", shown.string()), errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    throw_errno(fmt::format("cannot stat {}", shown.string()), errno);
  if (!S_ISREG(st.st_mode)) throw StoreError(fmt::format("{} is not a file", shown.string()));
  if (status) *status = st;
  try {
    return read_fd(fd.get(), shown);
  } catch (const std::system_error& e) {
    throw_store_error(fmt::format("cannot read {}", shown.string()), e);
  }
}

void unlink_if_present(int dir_fd, const char* name, const fs::path& shown) {
  if (::unlinkat(dir_fd, name, 0) != 0 && errno != ENOENT)
    throw_errno(fmt::format("cannot remove {}", (shown / name).string()), errno);
}

// Temporary files of an interrupted write: `.sensor_*.tmp-*` (see write_temp_file_at).
bool is_temp_name(const std::string& name) {
  return name.rfind(".sensor_", 0) == 0 && name.find(".tmp-") != std::string::npos;
}

// unlinkat removes a symlink of that name, never what it points to.
void remove_stale_temps(int dir_fd, const fs::path& shown) {
  for (const DirEntry& entry : list_entries(dir_fd, shown)) {
    if (!entry.folder && is_temp_name(entry.name))
      unlink_if_present(dir_fd, entry.name.c_str(), shown);
  }
}

bool same_public_key(const std::string& a, const std::string& b) {
  try {
    return fingerprint(a) == fingerprint(b);
  } catch (const KeyError&) {
    return false;
  }
}

// An mtime as std::filesystem reports it. The file clock's epoch is a whole number of seconds
// away from the system clock's (2174 in libstdc++, 1970 in libc++): measured, rounded, rather
// than written down.
fs::file_time_type to_file_time(const struct timespec& time) {
  using namespace std::chrono;
  const nanoseconds file_now =
      duration_cast<nanoseconds>(fs::file_time_type::clock::now().time_since_epoch());
  const nanoseconds system_now = duration_cast<nanoseconds>(system_clock::now().time_since_epoch());
  const seconds offset = round<seconds>(file_now - system_now);
  const nanoseconds since_epoch = seconds(time.tv_sec) + nanoseconds(time.tv_nsec) + offset;
  return fs::file_time_type(duration_cast<fs::file_time_type::duration>(since_epoch));
}

bool holds_key_file(int dir_fd) {
  return is_file_at(dir_fd, kPrivateKeyFile) || is_file_at(dir_fd, kPublicKeyFile);
}

// The type of the pair in a device folder, from its public key (the private key stays unread);
// none when that cannot be read.
std::optional<KeyType> pair_type_at(int device_fd) {
  try {
    if (std::optional<std::string> pem = read_key_file_at(device_fd, kPublicKeyFile, {}))
      return public_key_type(*pem);
  } catch (const std::exception&) {
  }
  return std::nullopt;
}

// The index of every pair under the root (one scan): legacy device folders and users' device
// folders with a private key.
KeyIndex::Map scan_pairs(int root_fd, const fs::path& root) {
  KeyIndex::Map pairs;
  for (const DirEntry& top : list_entries(root_fd, root)) {
    if (!top.folder || !is_valid_identifier(top.name)) continue;
    UniqueFd top_fd = open_folder(root_fd, top.name, root / top.name, false);
    if (!top_fd) continue;
    if (is_file_at(top_fd.get(), kPrivateKeyFile))
      insert_in_order(pairs[top.name], {std::nullopt, pair_type_at(top_fd.get())});
    for (const DirEntry& device : list_entries(top_fd.get(), root / top.name)) {
      if (!device.folder || !is_valid_identifier(device.name)) continue;
      UniqueFd device_fd = open_folder(top_fd.get(), device.name, {}, false);
      if (device_fd && is_file_at(device_fd.get(), kPrivateKeyFile))
        insert_in_order(pairs[device.name], {top.name, pair_type_at(device_fd.get())});
    }
  }
  return pairs;
}

fs::path pair_dir(const fs::path& root, const std::optional<std::string>& user,
                  const std::string& device) {
  return user ? root / *user / device : root / device;
}

// What `index` says against what `disk` holds (both as scan_pairs() makes them).
std::vector<IndexProblem> compare_index(const KeyIndex::Map& index, const KeyIndex::Map& disk,
                                        const fs::path& root) {
  using Folder = std::pair<std::string, std::optional<std::string>>;  // device, user
  std::map<Folder, std::optional<KeyType>> indexed;
  std::map<Folder, std::optional<KeyType>> held;
  for (const auto& [device, pairs] : index)
    for (const IndexedPair& pair : pairs) indexed[{device, pair.user}] = pair.type;
  for (const auto& [device, pairs] : disk)
    for (const IndexedPair& pair : pairs) held[{device, pair.user}] = pair.type;
  std::vector<IndexProblem> problems;
  for (const auto& [folder, type] : held) {
    const auto it = indexed.find(folder);
    const fs::path dir = pair_dir(root, folder.second, folder.first);
    if (it == indexed.end()) {
      problems.push_back({dir, "holds a key pair that the device index does not name"});
    } else if (it->second != type) {
      problems.push_back({dir, fmt::format("the device index says {}, the public key is {}",
                                           it->second ? to_string(*it->second) : "unknown",
                                           type ? to_string(*type) : "unknown")});
    }
  }
  for (const auto& [folder, type] : indexed)
    if (held.find(folder) == held.end())
      problems.push_back({pair_dir(root, folder.second, folder.first),
                          "named by the device index but holds no private key"});
  return problems;
}

constexpr std::size_t kNameLocks = 64;

}  // namespace

// What the threads calling one store share: the pair count (with slots reserved by writes in
// progress) and locks by top-level name, so a legacy device D (exclusive) and user D's devices
// (shared among themselves) never decide what <root>/D is at the same time.
struct KeyStore::Shared {
  std::mutex count_mutex;
  std::size_t count = 0;
  std::array<std::shared_mutex, kNameLocks> name_locks;
  KeyIndex index;                         // device -> pairs (key_index.hpp)
  std::mutex rescan_mutex;                // one rescan at a time
  std::atomic<std::uint32_t> rescans{0};  // 32 bits: lock-free on 32-bit ARM

  std::shared_mutex& name_lock(const std::string& name) {
    return name_locks[std::hash<std::string>{}(name) % kNameLocks];
  }
  void release_one() {
    std::lock_guard<std::mutex> lock(count_mutex);
    if (count > 0) --count;
  }
};

// A slot of the quota taken by a write in progress: given back unless the pair got written.
class KeyStore::Reservation {
 public:
  Reservation() = default;
  explicit Reservation(Shared* shared) : shared_(shared) {}
  Reservation(Reservation&& other) noexcept : shared_(std::exchange(other.shared_, nullptr)) {}
  Reservation& operator=(Reservation&& other) noexcept {
    if (this != &other) {
      if (shared_) shared_->release_one();
      shared_ = std::exchange(other.shared_, nullptr);
    }
    return *this;
  }
  ~Reservation() {
    if (shared_) shared_->release_one();
  }
  void commit() noexcept { shared_ = nullptr; }

 private:
  Shared* shared_ = nullptr;
};

KeyStore::KeyStore(fs::path root, StoreOptions options)
    : root_(std::move(root)),
      max_devices_(options.max_devices),
      shared_(std::make_unique<Shared>()) {
  if (root_.empty()) throw StoreError("key store root is empty");
  if (options.key_group) {
    key_group_ = resolve_group(*options.key_group);
    require_group_member(*key_group_);
  }
  struct stat st {};
  if (::lstat(root_.c_str(), &st) != 0) {
    if (errno != ENOENT)
      throw_errno(fmt::format("cannot check key store root {}", root_.string()), errno);
    create_root(root_, modes_for(key_group_).folder, key_group_);
  }
  root_fd_ = open_private_folder(root_, key_group_, "key store root ");
  shared_->index.begin_rebuild();
  shared_->index.finish_rebuild(scan_pairs(root_fd_.get(), root_));
  shared_->count = shared_->index.pairs();
}

KeyStore::~KeyStore() = default;
KeyStore::KeyStore(KeyStore&&) noexcept = default;
KeyStore& KeyStore::operator=(KeyStore&&) noexcept = default;

std::size_t KeyStore::device_count() const {
  std::lock_guard<std::mutex> lock(shared_->count_mutex);
  return shared_->count;
}

InstanceLock KeyStore::lock_instance() const {
  return InstanceLock(root_fd_.get(), root_);
}

fs::path KeyStore::device_dir(const std::optional<std::string>& user,
                              const std::string& device) const {
  if (!is_valid_identifier(device)) throw std::invalid_argument("invalid device id");
  if (!user) return root_ / device;
  if (!is_valid_identifier(*user)) throw std::invalid_argument("invalid user id");
  return root_ / *user / device;
}

UniqueFd KeyStore::open_device_folder(const std::optional<std::string>& user,
                                      const std::string& device, bool strict) const {
  if (!user) return open_folder(root_fd_.get(), device, root_ / device, strict);
  UniqueFd user_fd = open_folder(root_fd_.get(), *user, root_ / *user, strict);
  if (!user_fd) return {};
  return open_folder(user_fd.get(), device, root_ / *user / device, strict);
}

bool KeyStore::has_keys(const std::optional<std::string>& user, const std::string& device) const {
  device_dir(user, device);  // validates
  UniqueFd device_fd = open_device_folder(user, device, false);
  return device_fd && is_file_at(device_fd.get(), kPrivateKeyFile);
}

std::optional<StoredKey> KeyStore::load(const std::optional<std::string>& user,
                                        const std::string& device) const {
  const fs::path dir = device_dir(user, device);
  UniqueFd device_fd = open_device_folder(user, device, true);
  if (!device_fd) return std::nullopt;
  struct stat private_status {};
  std::optional<std::string> private_text =
      read_key_file_at(device_fd.get(), kPrivateKeyFile, dir / kPrivateKeyFile, &private_status);
  if (!private_text) return std::nullopt;
  const Secret private_pem = Secret::take(std::move(*private_text));

  KeyPair pair;
  try {
    pair = key_pair_from_private_pem(private_pem.view());
  } catch (const KeyError& e) {
    throw_store_error(
        fmt::format("{} is not a usable private key", (dir / kPrivateKeyFile).string()), e);
  }

  StoredKey stored{pair.type, pair.public_pem, fingerprint(pair.public_pem),
                   to_file_time(private_status.st_mtim), false};
  std::optional<std::string> public_pem;
  try {
    public_pem = read_key_file_at(device_fd.get(), kPublicKeyFile, dir / kPublicKeyFile);
  } catch (const StoreError&) {
    // A symlink or special file in place of the public key: replaced below like a mismatch
    // (renameat replaces the link itself, never what it points to).
  }
  if (!public_pem || !same_public_key(*public_pem, pair.public_pem)) {
    try {
      write_file_atomic_at(device_fd.get(), kPublicKeyFile, pair.public_pem,
                           modes_for(key_group_).public_key, key_group_, dir);
    } catch (const std::system_error& e) {
      throw_store_error(fmt::format("cannot repair {}", (dir / kPublicKeyFile).string()), e);
    }
    stored.repaired = true;
  }
  return stored;
}

void KeyStore::check_collision(int top_fd, const std::optional<std::string>& user,
                               const std::string& device) const {
  if (user) {
    // <root>/<user> must not be a legacy device folder: those hold key files.
    for (const char* name : kDeviceFiles) {
      if (exists_at(top_fd, name)) {
        throw CollisionError(fmt::format(
            "key store collision: {} is the legacy folder of device {} (it holds {}), so it "
            "cannot also be the folder of user {}; nothing was written",
            (root_ / *user).string(), *user, name, *user));
      }
    }
    return;
  }
  // <root>/<device> must not be a user folder: those hold device folders.
  for (const DirEntry& entry : list_entries(top_fd, root_ / device)) {
    if (entry.folder) {
      throw CollisionError(fmt::format(
          "key store collision: {} is the folder of user {} (it holds the device folder {}), so "
          "it cannot also be the legacy folder of device {}; nothing was written",
          (root_ / device).string(), device, entry.name, device));
    }
  }
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
  if (!same_public_key(pair.public_pem, derived.public_pem)) {
    throw StoreError("refusing to store a pair whose public key does not match its private key");
  }

  const Modes modes = modes_for(key_group_);
  const std::string& top = user ? *user : device;
  const fs::path top_path = root_ / top;
  const NameHold hold(shared_->name_lock(top), user.has_value());

  // Collision and quota are decided before anything is written.
  UniqueFd top_fd = open_folder(root_fd_.get(), top, top_path, true);
  if (top_fd) check_collision(top_fd.get(), user, device);
  UniqueFd device_fd;
  if (!user) {
    device_fd = std::move(top_fd);
  } else if (top_fd) {
    device_fd = open_folder(top_fd.get(), device, dir, true);
  }
  const bool had_pair = device_fd && is_file_at(device_fd.get(), kPrivateKeyFile);
  Reservation reservation;
  if (!had_pair) {
    std::lock_guard<std::mutex> lock(shared_->count_mutex);
    if (shared_->count >= max_devices_) throw QuotaError(shared_->count, max_devices_);
    ++shared_->count;
    reservation = Reservation(shared_.get());
  }

  auto step = [this](WriteStep done) {
    if (step_hook_) step_hook_(done);
  };
  std::string private_temp;
  std::string public_temp;
  try {
    if (user) {
      if (top_fd) {
        adopt_folder(top_fd.get(), modes.folder, key_group_, top_path);
      } else {
        top_fd = make_folder(root_fd_.get(), top, top_path, modes.folder, key_group_);
      }
    }
    if (device_fd) {
      adopt_folder(device_fd.get(), modes.folder, key_group_, dir);
    } else {
      device_fd =
          make_folder(user ? top_fd.get() : root_fd_.get(), device, dir, modes.folder, key_group_);
    }
    const int folder = device_fd.get();
    remove_stale_temps(folder, dir);
    if (keep_backup) {
      if (std::optional<std::string> current_text =
              read_key_file_at(folder, kPrivateKeyFile, dir / kPrivateKeyFile)) {
        const Secret current = Secret::take(std::move(*current_text));
        // The backup generation's certificate certifies the pair about to be overwritten; the
        // current pair's, if any, follows below.
        unlink_if_present(folder, kCertificateBackupFile, dir);
        // The backup pair is made consistent the same way: its public half comes from its private.
        std::optional<std::string> current_public;
        try {
          KeyPair previous = key_pair_from_private_pem(current.view());
          current_public = previous.public_pem;
        } catch (const KeyError&) {
          current_public = read_key_file_at(folder, kPublicKeyFile, dir / kPublicKeyFile);
        }
        write_file_atomic_at(folder, kPrivateBackupFile, current.view(), modes.backup, key_group_,
                             dir);
        if (current_public) {
          write_file_atomic_at(folder, kPublicBackupFile, *current_public, modes.backup, key_group_,
                               dir);
        } else {
          unlink_if_present(folder, kPublicBackupFile, dir);
        }
        step(WriteStep::backup_written);
      }
    }
    if (had_pair && exists_at(folder, kCertificateFile)) {
      // Moved first: at no moment does a certificate sit beside a key it does not certify. With
      // no backup kept, its key is gone and so is it.
      if (keep_backup) {
        rename_at(folder, kCertificateFile, kCertificateBackupFile, dir);
      } else {
        unlink_if_present(folder, kCertificateFile, dir);
      }
      fsync_folder(folder, dir);
    }
    private_temp = write_temp_file_at(folder, kPrivateKeyFile, derived.private_pem,
                                      modes.private_key, key_group_, dir);
    step(WriteStep::private_temp_synced);
    public_temp = write_temp_file_at(folder, kPublicKeyFile, derived.public_pem, modes.public_key,
                                     key_group_, dir);
    step(WriteStep::public_temp_synced);
    rename_at(folder, private_temp, kPrivateKeyFile, dir);
    private_temp.clear();
    step(WriteStep::private_renamed);
    rename_at(folder, public_temp, kPublicKeyFile, dir);
    public_temp.clear();
    step(WriteStep::public_renamed);
    fsync_folder(folder, dir);
  } catch (...) {
    if (device_fd) {
      if (!private_temp.empty()) ::unlinkat(device_fd.get(), private_temp.c_str(), 0);
      if (!public_temp.empty()) ::unlinkat(device_fd.get(), public_temp.c_str(), 0);
      // The private key was renamed into place before the failure: the pair counts.
      if (is_file_at(device_fd.get(), kPrivateKeyFile)) {
        reservation.commit();
        shared_->index.add(user, device, derived.type);
      }
    }
    try {
      throw;
    } catch (const std::system_error& e) {
      throw_store_error(fmt::format("cannot store the key pair in {}", dir.string()), e);
    }
  }
  reservation.commit();
  shared_->index.add(user, device, derived.type);
  struct stat st {};
  if (::fstatat(device_fd.get(), kPrivateKeyFile, &st, AT_SYMLINK_NOFOLLOW) != 0)
    throw_errno(fmt::format("cannot stat {}", (dir / kPrivateKeyFile).string()), errno);
  return StoredKey{derived.type, derived.public_pem, fingerprint(derived.public_pem),
                   to_file_time(st.st_mtim), false};
}

bool KeyStore::remove(const std::optional<std::string>& user, const std::string& device,
                      LegacyKeys legacy) {
  device_dir(user, device);  // validates
  bool removed = remove_one(user, device);
  if (user && legacy == LegacyKeys::remove) removed = remove_one(std::nullopt, device) || removed;
  return removed;
}

bool KeyStore::remove_one(const std::optional<std::string>& user, const std::string& device) {
  const fs::path dir = device_dir(user, device);
  const NameHold hold(shared_->name_lock(user ? *user : device), user.has_value());

  UniqueFd user_fd;
  if (user) {
    user_fd = open_folder(root_fd_.get(), *user, root_ / *user, true);
    if (!user_fd) return false;
  }
  const int parent = user ? user_fd.get() : root_fd_.get();
  UniqueFd device_fd = open_folder(parent, device, dir, true);
  if (!device_fd) return false;
  bool removed = false;
  for (const char* name : kDeviceFiles) {  // the private key first
    if (::unlinkat(device_fd.get(), name, 0) == 0) {
      removed = true;
      if (std::strcmp(name, kPrivateKeyFile) == 0) {
        shared_->release_one();
        shared_->index.remove(user, device);
      }
    } else if (errno != ENOENT && errno != EISDIR) {  // EISDIR: an old store's device folder
      throw_errno(fmt::format("cannot remove {}", (dir / name).string()), errno);
    }
  }
  remove_stale_temps(device_fd.get(), dir);
  // A folder that still holds something else (a legacy folder that is also a user's) stays.
  if (::unlinkat(parent, device.c_str(), AT_REMOVEDIR) == 0) {
    sync_folder(parent, dir.parent_path());
  } else if (errno != ENOTEMPTY && errno != EEXIST) {
    throw_errno(fmt::format("cannot remove {}", dir.string()), errno);
  } else if (removed) {
    sync_folder(device_fd.get(), dir);
  }
  return removed;
}

std::vector<DeviceFolder> KeyStore::private_key_folders(const std::string& device) const {
  if (!is_valid_identifier(device)) throw std::invalid_argument("invalid device id");
  // What the index says is checked, folder by folder, and so is the legacy folder (the original
  // agent's layout, which operators copy by hand): a pair missing, or one the index does not know
  // there, means the store changed behind our back, and the store is scanned again.
  auto verified = [&](std::vector<DeviceFolder>& folders) {
    bool legacy_indexed = false;
    for (const IndexedPair& pair : shared_->index.find(device)) {
      legacy_indexed = legacy_indexed || !pair.user;
      UniqueFd device_fd = open_device_folder(pair.user, device, false);
      if (!device_fd || !is_file_at(device_fd.get(), kPrivateKeyFile)) return false;
      folders.push_back(
          {pair.user, device, pair.user ? root_ / *pair.user / device : root_ / device});
    }
    UniqueFd legacy_fd = open_folder(root_fd_.get(), device, {}, false);
    return legacy_indexed == (legacy_fd && is_file_at(legacy_fd.get(), kPrivateKeyFile));
  };
  std::vector<DeviceFolder> folders;
  if (verified(folders)) return folders;
  rescan_index();
  folders.clear();
  if (verified(folders)) return folders;
  // Still changing under us: only what is there now.
  folders.erase(std::remove_if(folders.begin(), folders.end(),
                               [&](const DeviceFolder& folder) {
                                 return !has_keys(folder.user, folder.device);
                               }),
                folders.end());
  return folders;
}

void KeyStore::rescan_index() const {
  std::lock_guard<std::mutex> one_at_a_time(shared_->rescan_mutex);
  shared_->index.begin_rebuild();
  KeyIndex::Map scanned;
  try {
    scanned = scan_pairs(root_fd_.get(), root_);
  } catch (...) {
    shared_->index.finish_rebuild(shared_->index.snapshot());
    throw;
  }
  shared_->index.finish_rebuild(std::move(scanned));
  ++shared_->rescans;
}

std::uint64_t KeyStore::index_rescans() const noexcept {
  return shared_->rescans;
}

std::map<std::string, std::size_t> KeyStore::pairs_by_type() const {
  return shared_->index.pairs_by_type();
}

std::vector<IndexProblem> KeyStore::check_index() const {
  return compare_index(shared_->index.snapshot(), scan_pairs(root_fd_.get(), root_), root_);
}

std::vector<fs::path> KeyStore::private_key_candidates(const std::string& device) const {
  std::vector<fs::path> candidates;
  for (const DeviceFolder& folder : private_key_folders(device))
    candidates.push_back(folder.dir / kPrivateKeyFile);
  return candidates;
}

bool KeyStore::store_certificate(const std::optional<std::string>& user, const std::string& device,
                                 const std::string& pem) {
  const fs::path dir = device_dir(user, device);
  std::shared_mutex& name_lock = shared_->name_lock(user ? *user : device);
  std::shared_lock<std::shared_mutex> hold(name_lock);
  UniqueFd device_fd = open_device_folder(user, device, true);
  if (!device_fd || !is_file_at(device_fd.get(), kPrivateKeyFile)) return false;
  try {
    write_file_atomic_at(device_fd.get(), kCertificateFile, pem, modes_for(key_group_).public_key,
                         key_group_, dir);
  } catch (const std::system_error& e) {
    throw_store_error(fmt::format("cannot store {}", (dir / kCertificateFile).string()), e);
  }
  return true;
}

std::optional<std::string> KeyStore::read_certificate(const std::optional<std::string>& user,
                                                      const std::string& device) const {
  const fs::path dir = device_dir(user, device);
  UniqueFd device_fd = open_device_folder(user, device, true);
  if (!device_fd) return std::nullopt;
  return read_key_file_at(device_fd.get(), kCertificateFile, dir / kCertificateFile);
}

std::optional<std::string> KeyStore::read_private_key(const std::optional<std::string>& user,
                                                      const std::string& device) const {
  const fs::path dir = device_dir(user, device);
  UniqueFd device_fd = open_device_folder(user, device, true);
  if (!device_fd) return std::nullopt;
  return read_key_file_at(device_fd.get(), kPrivateKeyFile, dir / kPrivateKeyFile);
}

std::vector<DeviceFolder> list_device_folders(const fs::path& root) {
  UniqueFd root_fd(::open(root.c_str(), kFolderFlags));
  if (!root_fd) {
    if (errno == ENOENT) return {};
    if (errno == ENOTDIR)
      throw StoreError(fmt::format("{} is not a folder ({}); the key store does not follow it",
                                   root.string(), describe_entry(AT_FDCWD, root.string())));
    throw_errno(fmt::format("cannot open {}", root.string()), errno);
  }
  std::vector<DeviceFolder> legacy;
  std::vector<DeviceFolder> owned;
  for (const DirEntry& top : list_entries(root_fd.get(), root)) {
    if (!top.folder || !is_valid_identifier(top.name)) continue;
    UniqueFd top_fd = open_folder(root_fd.get(), top.name, {}, false);
    if (!top_fd) continue;
    // A legacy device folder holds key files; a user folder holds device folders. An old store
    // may have a name that is both, so both are looked at.
    if (holds_key_file(top_fd.get())) legacy.push_back({std::nullopt, top.name, root / top.name});
    for (const DirEntry& device : list_entries(top_fd.get(), root / top.name)) {
      if (!device.folder || !is_valid_identifier(device.name)) continue;
      UniqueFd device_fd = open_folder(top_fd.get(), device.name, {}, false);
      if (device_fd && holds_key_file(device_fd.get()))
        owned.push_back({top.name, device.name, root / top.name / device.name});
    }
  }
  legacy.insert(legacy.end(), owned.begin(), owned.end());
  return legacy;
}

std::vector<IndexProblem> check_index(const fs::path& root) {
  UniqueFd root_fd(::open(root.c_str(), kFolderFlags));
  if (!root_fd) {
    if (errno == ENOENT) return {};
    throw_errno(fmt::format("cannot open {}", root.string()), errno);
  }
  // The listing `keys list` shows, reduced to folders that hold a private key.
  KeyIndex::Map listed;
  for (const DeviceFolder& folder : list_device_folders(root)) {
    UniqueFd dir(::open(folder.dir.c_str(), kFolderFlags));
    if (dir && is_file_at(dir.get(), kPrivateKeyFile))
      insert_in_order(listed[folder.device], {folder.user, pair_type_at(dir.get())});
  }
  return compare_index(scan_pairs(root_fd.get(), root), listed, root);
}

std::optional<std::string> read_key_file_no_follow(const fs::path& path) {
  return read_key_file_at(AT_FDCWD, path.c_str(), path);
}

}  // namespace pa::keystore
