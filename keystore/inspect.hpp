#pragma once
// Read-only inspection of a key store (SPEC section 5), for `provision-agent check` and `keys`:
// every device's files, modes and owners, whether its pair parses and matches, and each problem as
// a kind with its facts, which the caller words. Nothing here creates, repairs or removes a file
// (KeyStore's constructor repairs, so it is not used).
#include <sys/types.h>

#include <array>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "key_pair.hpp"
#include "key_store.hpp"

namespace pa::keystore {

// What lstat says about one path (a symlink is not followed).
struct FileFacts {
  std::filesystem::path path;
  bool exists = false;
  bool plain = false;  // a regular file (or a folder, for a folder), not a symlink or special file
  mode_t mode = 0;     // permission bits
  uid_t uid = 0;
};
FileFacts file_facts(const std::filesystem::path& path, bool folder);

// The files of one device.
enum class KeyFile { user_folder, folder, private_key, public_key, private_backup, public_backup };

enum class ProblemKind {
  // Who may touch the file:
  loose_mode,   // group or world bits it must not have (mode, forbidden, wanted)
  wrong_owner,  // owned by another user (owner, expected_owner)
  // What is in it:
  not_regular,  // a symlink or special file, which the agent does not follow
  unreadable,   // it cannot be read (detail: why)
  missing,      // the private key without which the public one is there, or the public key
  not_a_key,    // not a usable key of its kind (detail: the parser's reason)
  mismatch,     // the public key is not the private key's (fingerprint, expected_fingerprint)
};

struct KeyProblem {
  ProblemKind kind;
  KeyFile file;
  std::filesystem::path path;
  mode_t mode = 0;       // loose_mode: the file's mode
  mode_t forbidden = 0;  // loose_mode: the bits it must not have
  mode_t wanted = 0;     // loose_mode: the mode it should have
  uid_t owner = 0;       // wrong_owner, unreadable: the file's owner
  uid_t expected_owner = 0;
  std::string detail;
  std::string fingerprint;           // mismatch: the public key file's
  std::string expected_fingerprint;  // mismatch: the private key's

  // A problem of modes and owners rather than of key contents.
  bool about_access() const {
    return kind == ProblemKind::loose_mode || kind == ProblemKind::wrong_owner;
  }
};

// A device's status: the worst of its problems, worst first.
enum class KeyStatus {
  corrupt,
  missing_private,
  mismatch,
  bad_backup,
  wrong_owner,
  loose_mode,
  ok
};
// As `keys list` and `keys show` show them.
inline constexpr std::array<std::pair<KeyStatus, std::string_view>, 7> kKeyStatusNames{{
    {KeyStatus::corrupt, "corrupt"},
    {KeyStatus::missing_private, "missing-private"},
    {KeyStatus::mismatch, "mismatch"},
    {KeyStatus::bad_backup, "bad-backup"},
    {KeyStatus::wrong_owner, "wrong-owner"},
    {KeyStatus::loose_mode, "loose-mode"},
    {KeyStatus::ok, "ok"},
}};
std::string_view to_string(KeyStatus status) noexcept;
KeyStatus status_of(const KeyProblem& problem) noexcept;

struct DeviceReport {
  DeviceFolder folder;
  FileFacts user_folder;  // exists only with a user
  FileFacts dir, private_key, public_key, private_backup, public_backup;
  std::optional<KeyType> type;
  bool private_key_usable = false;
  std::string public_pem;  // derived from the private key; the file's when that is unusable
  std::string fingerprint;
  std::vector<KeyProblem> problems;

  KeyStatus status() const noexcept;
  // "user/device", or "device" in the legacy layout.
  std::string label() const;
};

// One device, judged against `owner` (SPEC section 5: folders 0700, private keys and backups
// 0600, public keys 0644; the key group's read bits are not judged here).
DeviceReport inspect_device(const DeviceFolder& folder, uid_t owner);

// The key store's owner as the agent sees it: the effective user, except that root inspecting a
// store owned by the service user judges files against that user.
uid_t expected_owner(const std::filesystem::path& root);

// Every device of the store. Throws StoreError when the root cannot be listed.
std::vector<DeviceReport> inspect_store(const std::filesystem::path& root);

// What is wrong with the store's root as the agent judges it at start, or nullopt when it is
// fine or does not exist yet (the agent creates it 0700).
struct RootProblem {
  enum class Kind {
    unreadable,     // it cannot be checked (detail: why)
    not_a_folder,   // something else is there
    unknown_group,  // PROVISION_KEY_GROUP names no usable group (detail: why)
    permission,     // modes or owner (detail: the problem, fix: the command, from PermissionError)
  };
  Kind kind;
  std::filesystem::path path;
  std::string detail;
  std::string fix;
};
std::optional<RootProblem> inspect_root(const std::filesystem::path& root,
                                        const std::optional<std::string>& key_group);

}  // namespace pa::keystore
