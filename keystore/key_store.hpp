#pragma once
// The key store on local disk (SPEC section 5):
//   <root>/<user>/<device>/sensor_private.pem (0600) and sensor_public.pem (0644),
//   <root>/<device>/ when there is no user (the original agent's legacy layout).
// Folders are 0700. With a key group (PROVISION_KEY_GROUP) folders are 0750 and private keys and
// backups 0640, all owned by that group; public keys are 0644 either way.
//
// Every access below the root goes through folder descriptors: the store holds an
// O_DIRECTORY|O_NOFOLLOW descriptor of the root and walks with openat(O_DIRECTORY|O_NOFOLLOW),
// mkdirat, fstatat(AT_SYMLINK_NOFOLLOW), renameat and unlinkat, so no symlink below the root is
// ever followed and no check can be raced by a rename. Every write is atomic (temporary file
// born owner-only with O_EXCL|O_NOFOLLOW, fchown, fchmod, fsync, renameat, fsync of the folder).
// One backup generation is kept on update.
//
// Thread safety: every member function may be called from several threads at once for different
// devices (also devices of one user, and legacy devices named like users). Calls for the same
// user and device must not overlap (the agent runs one request per device at a time).
#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "errors.hpp"
#include "file_names.hpp"
#include "file_util.hpp"
#include "instance_lock.hpp"
#include "key_index.hpp"
#include "key_pair.hpp"
#include "permissions.hpp"

namespace pa::keystore {

inline constexpr std::size_t kDefaultMaxDevices = 10000;  // PROVISION_MAX_DEVICES

struct StoreOptions {
  // PROVISION_KEY_GROUP: the group that may read private keys (SPEC section 5); none by default.
  std::optional<std::string> key_group;
  // PROVISION_MAX_DEVICES: key pairs the store may hold; a pair for one more device is refused
  // with QuotaError. Replacing a device's pair is always allowed.
  std::size_t max_devices = kDefaultMaxDevices;
};

struct StoredKey {
  KeyType type;
  std::string public_pem;
  std::string fingerprint;
  std::filesystem::file_time_type created;  // mtime of the private key file
  bool repaired = false;  // the public key file was missing or mismatched and was rewritten
};

// The steps of an atomic pair write, for tests that interrupt a write between them.
enum class WriteStep {
  backup_written,       // previous pair copied to the backup files
  private_temp_synced,  // new private key written to its temporary file and fsynced
  public_temp_synced,   // new public key written to its temporary file and fsynced
  private_renamed,      // new private key renamed into place
  public_renamed,       // new public key renamed into place
};

// A device folder in the store: <root>/<user>/<device>, or <root>/<device> with no user.
struct DeviceFolder {
  std::optional<std::string> user;
  std::string device;
  std::filesystem::path dir;
};

// A disagreement between the device index and the folders on disk, for `keys verify`.
struct IndexProblem {
  std::filesystem::path path;  // the device folder
  std::string why;
};

// What remove() takes with a user's device (SPEC section 3.1: a delete with a user_id also
// removes the device's legacy folder <root>/<D>/, as the original agent did).
enum class LegacyKeys { keep, remove };

class KeyStore {
 public:
  // Opens the key store root with O_DIRECTORY|O_NOFOLLOW, creating it (and missing parents) with
  // the folder mode and the key group when it is missing, and counts the pairs it holds.
  // Throws GroupError for an unknown key group or one the process cannot give files to (exit
  // 78), PermissionError for a root that is a symlink or breaks the rules of permissions.hpp,
  // StoreError when it cannot be created or read.
  explicit KeyStore(std::filesystem::path root, StoreOptions options = {});
  ~KeyStore();
  KeyStore(KeyStore&&) noexcept;
  KeyStore& operator=(KeyStore&&) noexcept;
  KeyStore(const KeyStore&) = delete;
  KeyStore& operator=(const KeyStore&) = delete;

  const std::filesystem::path& root() const noexcept { return root_; }
  // The resolved key group, for the state folder and agent key checks (permissions.hpp).
  std::optional<gid_t> key_group() const noexcept { return key_group_; }
  std::size_t max_devices() const noexcept { return max_devices_; }
  // Key pairs held: device folders with a sensor_private.pem, counted at open and kept up to
  // date by store() and remove() (changes made by hand are seen at the next open).
  std::size_t device_count() const;

  // Locks the root for this process (SPEC section 5: one agent at a time). Throws
  // InstanceLockedError naming the holder's PID, or StoreError.
  InstanceLock lock_instance() const;

  // <root>/<user>/<device> or <root>/<device>, for messages and read-only tools. Identifiers
  // must already be valid (std::invalid_argument otherwise): this is the last guard before the
  // file system.
  std::filesystem::path device_dir(const std::optional<std::string>& user,
                                   const std::string& device) const;

  // Whether the device folder holds a sensor_private.pem (a symlink anywhere on the way: no).
  bool has_keys(const std::optional<std::string>& user, const std::string& device) const;

  // Loads the stored pair's public half, repairing sensor_public.pem from the private key when it
  // is missing or does not match. nullopt when there is no private key. Throws StoreError.
  std::optional<StoredKey> load(const std::optional<std::string>& user,
                                const std::string& device) const;

  // Stores a pair atomically. keep_backup: the current pair (if any) becomes the single backup
  // generation (sensor_private.prev.pem / sensor_public.prev.pem, 0600, or 0640 with the key
  // group). A certificate of the replaced pair no longer matches: it moves to
  // sensor_cert.prev.pem before the new pair is renamed into place (SPEC section 5), or is
  // removed when no backup is kept; a backup that had no certificate has none. Throws
  // CollisionError (a legacy device folder where a user folder would go, or the reverse),
  // QuotaError (a pair for one more device than max_devices), both before anything is written,
  // or StoreError.
  StoredKey store(const std::optional<std::string>& user, const std::string& device,
                  const KeyPair& pair, bool keep_backup);

  // Removes the device's keys, backups and certificate (and its folder when that is then empty:
  // a legacy device folder that is also a user folder keeps the user's device folders).
  // LegacyKeys::remove with a user also removes <root>/<device>/'s keys the same way.
  // true when a key file was removed. Throws StoreError.
  bool remove(const std::optional<std::string>& user, const std::string& device,
              LegacyKeys legacy = LegacyKeys::keep);

  // Private key files that may decrypt requests for `device`, in SPEC section 4's order:
  // <root>/<user>/<device>/sensor_private.pem for every user folder holding it (by user), then
  // the legacy one.
  std::vector<std::filesystem::path> private_key_candidates(const std::string& device) const;
  // The same as device folders, to read each with read_private_key(). From the device index
  // (key_index.hpp), not a listing of the store: each folder it names is checked, and so is the
  // legacy folder, and the store is scanned again when they disagree, so the cost does not grow
  // with the store. Pairs added by hand below a user folder are seen after the next scan (at the
  // next start, or when a lookup finds the index wrong).
  std::vector<DeviceFolder> private_key_folders(const std::string& device) const;

  // Scans the store again and replaces the device index (writes running meanwhile are kept).
  // Throws StoreError when the root cannot be listed.
  void rescan_index() const;
  // How many times a lookup found the index wrong and the store was scanned again.
  std::uint64_t index_rescans() const noexcept;
  // Key pairs by type name ("rsa-2048", ...; "unknown" when the public key cannot be read), from
  // the index: for the metrics (SPEC section 8).
  std::map<std::string, std::size_t> pairs_by_type() const;
  // The index against a fresh scan of the store: empty when they agree. Throws StoreError.
  std::vector<IndexProblem> check_index() const;

  // Stores `pem` as the device's sensor_cert.pem (0644) atomically. The caller has checked it
  // (keystore/x509.hpp). false when the device has no keys. Throws StoreError.
  bool store_certificate(const std::optional<std::string>& user, const std::string& device,
                         const std::string& pem);
  // The device's sensor_cert.pem, or nullopt when it has none. Throws StoreError.
  std::optional<std::string> read_certificate(const std::optional<std::string>& user,
                                              const std::string& device) const;

  // The device's sensor_private.pem text read through folder descriptors (never following a
  // symlink); nullopt when there is none. The caller wipes it. Throws StoreError.
  std::optional<std::string> read_private_key(const std::optional<std::string>& user,
                                              const std::string& device) const;

  // Test hook: called after each step of a pair write (see WriteStep).
  void set_write_step_hook(std::function<void(WriteStep)> hook) { step_hook_ = std::move(hook); }

 private:
  struct Shared;
  class Reservation;

  UniqueFd open_device_folder(const std::optional<std::string>& user, const std::string& device,
                              bool strict) const;
  void check_collision(int top_fd, const std::optional<std::string>& user,
                       const std::string& device) const;
  bool remove_one(const std::optional<std::string>& user, const std::string& device);

  std::filesystem::path root_;
  UniqueFd root_fd_;
  std::optional<gid_t> key_group_;
  std::size_t max_devices_ = kDefaultMaxDevices;
  std::unique_ptr<Shared> shared_;  // the pair count and the per-name locks
  std::function<void(WriteStep)> step_hook_;
};

// Read-only inspection for the operator commands (`keys list/show/verify`, `check`, SPEC
// section 7): nothing below creates, repairs or removes a file.

// Every folder under `root` that holds a sensor_private.pem or sensor_public.pem, legacy ones
// first, then by user and device. Symlinks and names that are not identifiers (the lock file)
// are skipped. Empty when `root` does not exist; throws StoreError when it cannot be listed or
// is a symlink.
std::vector<DeviceFolder> list_device_folders(const std::filesystem::path& root);

// For `keys verify` (which runs beside the agent and so cannot see its memory): builds the device
// index of `root` as KeyStore does when it opens the store, and checks it against the device
// folders list_device_folders() finds: every folder holding a private key must be indexed, with
// its type, and nothing else. Empty when they agree; nothing is written. Throws StoreError.
std::vector<IndexProblem> check_index(const std::filesystem::path& root);

// A key file's text without following a symlink (as the store reads it); nullopt when the file
// does not exist. Throws StoreError for a symlink, a special file or a read error. The caller
// wipes private key text after use.
std::optional<std::string> read_key_file_no_follow(const std::filesystem::path& path);

}  // namespace pa::keystore
