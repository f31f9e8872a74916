#pragma once
// The key store on local disk (SPEC section 5):
//   <root>/<user>/<device>/sensor_private.pem (0600) and sensor_public.pem (0644),
//   <root>/<device>/ when there is no user (the original agent's legacy layout).
// Folders are 0700. Every write is atomic (temporary file born 0600 with O_EXCL|O_NOFOLLOW,
// fsync, rename, fsync of the folder). One backup generation is kept on update.
#include <chrono>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "key_pair.hpp"

namespace pa::keystore {

struct StoreError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A path that is group/world writable or owned by another (non-root) user. The message names
// the path, what is wrong and the chmod/chown that fixes it.
struct PermissionError : StoreError {
  using StoreError::StoreError;
};

// Throws PermissionError if `path` is group- or world-writable, or owned by a user other than
// the effective user or root ("no more permissive than", not an exact mode).
void require_private_path(const std::filesystem::path& path);

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

class KeyStore {
 public:
  // Opens (creating 0700 if missing) the key store root. Throws PermissionError for a loose root,
  // StoreError when it cannot be created.
  explicit KeyStore(std::filesystem::path root);

  const std::filesystem::path& root() const noexcept { return root_; }

  // <root>/<user>/<device> or <root>/<device>. Identifiers must already be valid
  // (std::invalid_argument otherwise): this is the last guard before the file system.
  std::filesystem::path device_dir(const std::optional<std::string>& user,
                                   const std::string& device) const;

  bool has_keys(const std::optional<std::string>& user, const std::string& device) const;

  // Loads the stored pair's public half, repairing sensor_public.pem from the private key when it
  // is missing or does not match. nullopt when there is no private key. Throws StoreError.
  std::optional<StoredKey> load(const std::optional<std::string>& user,
                                const std::string& device) const;

  // Stores a pair atomically. keep_backup: the current pair (if any) becomes the single backup
  // generation (sensor_private.prev.pem / sensor_public.prev.pem, both 0600). Throws StoreError.
  StoredKey store(const std::optional<std::string>& user, const std::string& device,
                  const KeyPair& pair, bool keep_backup);

  // Removes the device's keys and backups (and its folder when empty). false when there were none.
  bool remove(const std::optional<std::string>& user, const std::string& device);

  // Private key files that may decrypt requests for `device`, in SPEC section 4's order:
  // <root>/<user>/<device>/sensor_private.pem for every user folder holding it, then the legacy
  // one.
  std::vector<std::filesystem::path> private_key_candidates(const std::string& device) const;

  // Test hook: called after each step of a pair write (see WriteStep).
  void set_write_step_hook(std::function<void(WriteStep)> hook) { step_hook_ = std::move(hook); }

 private:
  std::filesystem::path root_;
  std::function<void(WriteStep)> step_hook_;
};

// Read-only inspection for the operator commands (`keys list/show/verify`, `check`, SPEC
// section 7): nothing below creates, repairs or removes a file.

// File names inside a device folder.
inline constexpr const char* kPrivateKeyFile = "sensor_private.pem";
inline constexpr const char* kPublicKeyFile = "sensor_public.pem";
inline constexpr const char* kPrivateBackupFile = "sensor_private.prev.pem";
inline constexpr const char* kPublicBackupFile = "sensor_public.prev.pem";

// A device folder in the store: <root>/<user>/<device>, or <root>/<device> with no user.
struct DeviceFolder {
  std::optional<std::string> user;
  std::string device;
  std::filesystem::path dir;
};

// Every folder under `root` that holds a sensor_private.pem or sensor_public.pem, legacy ones
// first, then by user and device. Symlinks and names that are not identifiers are skipped. Empty
// when `root` does not exist; throws StoreError when it cannot be listed.
std::vector<DeviceFolder> list_device_folders(const std::filesystem::path& root);

// A key file's text without following a symlink (as the store reads it); nullopt when the file
// does not exist. Throws StoreError for a symlink, a special file or a read error. The caller
// wipes private key text after use.
std::optional<std::string> read_key_file_no_follow(const std::filesystem::path& path);

}  // namespace pa::keystore
