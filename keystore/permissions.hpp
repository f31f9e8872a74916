#pragma once
// SPEC section 5's ownership and mode rules, and the key group that may read private keys.
//
// Two rules:
// - plugin files and folders (require_private_path): owned by the effective user or root, not
//   group- or world-writable. Readable is fine: a plugin is not a secret.
// - folders and files that hold secrets (the key store root, the state folder, the agent key):
//   owned by the effective user or root, never group- or world-writable, nothing at all for
//   others, and the group's read (and, for a folder, search) bit only when the group owning the
//   path is the key group. Stricter modes (0500, 0400) are fine: "no more permissive than".
// A breach throws PermissionError naming the path, what is wrong and the chmod/chgrp/chown fix.
#include <sys/stat.h>
#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "errors.hpp"
#include "file_util.hpp"

namespace pa::keystore {

// The group named by PROVISION_KEY_GROUP (a name, or a number that names no group otherwise).
// Throws GroupError when there is no such group.
gid_t resolve_group(const std::string& name);

// A group's name for messages; its number when it has none.
std::string group_name(gid_t gid);

// Throws GroupError unless the process may give its files to `gid`: it runs as root, or `gid` is
// its effective group or one of its supplementary groups (systemd's Group=, `usermod -aG`).
void require_group_member(gid_t gid);

// A plugin file or folder (first rule above). Follows a symlink, as dlopen does. Throws
// PermissionError, or StoreError when the path cannot be checked.
void require_private_path(const std::filesystem::path& path);

enum class PathKind { folder, file };

// The second rule, on what fstat returned for `path`. `description` starts the message
// ("key store root "). Throws PermissionError.
void check_private_stat(const struct stat& st, const std::filesystem::path& path, PathKind kind,
                        std::optional<gid_t> key_group, std::string_view description = {});

// A secret folder (the state folder; the KeyStore checks its root itself), opened with
// O_DIRECTORY|O_NOFOLLOW and checked with fstat, so the check holds for the descriptor returned.
// A symlink is refused (PermissionError). Throws StoreError when it cannot be opened.
UniqueFd open_private_folder(const std::filesystem::path& path,
                             std::optional<gid_t> key_group = std::nullopt,
                             std::string_view description = {});
void require_private_folder(const std::filesystem::path& path,
                            std::optional<gid_t> key_group = std::nullopt,
                            std::string_view description = {});

// A secret file outside the key store (the agent key): the same rule, opened with O_NOFOLLOW and
// checked with fstat. read_private_file returns the text read from the descriptor it checked;
// the caller wipes it. Throws PermissionError, or StoreError (missing, not a file, unreadable).
void require_private_file(const std::filesystem::path& path,
                          std::optional<gid_t> key_group = std::nullopt,
                          std::string_view description = {});
std::string read_private_file(const std::filesystem::path& path,
                              std::optional<gid_t> key_group = std::nullopt,
                              std::string_view description = {});

}  // namespace pa::keystore
