#include "permissions.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>
#include <vector>

namespace pa::keystore {
namespace fs = std::filesystem;

namespace {

// "a", "a and b", "a, b and c".
std::string join_words(const std::vector<std::string>& words) {
  std::string text;
  for (std::size_t i = 0; i < words.size(); ++i) {
    if (i > 0) text += i + 1 == words.size() ? " and " : ", ";
    text += words[i];
  }
  return text;
}

std::string join_commands(const std::vector<std::string>& commands) {
  std::string text;
  for (const std::string& command : commands) text += (text.empty() ? "" : " && ") + command;
  return text;
}

// getpwuid_r or getgrgid_r with a buffer grown until the entry fits: its name, else the number.
template <typename Entry, typename Id>
std::string entry_name(Id id, int (*lookup)(Id, Entry*, char*, std::size_t, Entry**),
                       char* Entry::*name) {
  std::vector<char> buffer(1024);
  Entry entry{};
  Entry* found = nullptr;
  while (lookup(id, &entry, buffer.data(), buffer.size(), &found) == ERANGE &&
         buffer.size() < (1u << 20)) {
    buffer.resize(buffer.size() * 2);
  }
  return found ? std::string(found->*name) : std::to_string(id);
}

std::string user_name(uid_t uid) {
  return entry_name<struct passwd>(uid, &::getpwuid_r, &passwd::pw_name);
}

std::optional<gid_t> find_group(const std::string& name) {
  std::vector<char> buffer(1024);
  struct group entry {};
  struct group* found = nullptr;
  int error = 0;
  while ((error = ::getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found)) ==
             ERANGE &&
         buffer.size() < (1u << 20)) {
    buffer.resize(buffer.size() * 2);
  }
  if (found) return found->gr_gid;
  return std::nullopt;
}

[[noreturn]] void throw_errno(const std::string& what, int error) {
  throw StoreError(what + ": " + std::strerror(error));
}

// A symlink where a secret folder or file is expected: refused, with where it points.
[[noreturn]] void throw_symlink(const fs::path& path, std::string_view description) {
  std::error_code ec;
  const fs::path target = fs::canonical(path, ec);  // for the message only
  throw PermissionError(path, "is a symlink (not followed)",
                        ec ? fmt::format("name the real path instead of {}", path.string())
                           : fmt::format("name {} instead", target.string()),
                        description);
}

}  // namespace

gid_t resolve_group(const std::string& name) {
  if (name.empty()) throw GroupError("the key group name is empty");
  if (std::optional<gid_t> gid = find_group(name)) return *gid;
  if (std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
      name.size() < 10) {
    return static_cast<gid_t>(std::stoul(name));
  }
  throw GroupError(
      fmt::format("unknown group \"{}\" (create it with: groupadd --system {})", name, name));
}

std::string group_name(gid_t gid) {
  return entry_name<struct group>(gid, &::getgrgid_r, &group::gr_name);
}

void require_group_member(gid_t gid) {
  if (::geteuid() == 0 || ::getegid() == gid) return;
  const int count = ::getgroups(0, nullptr);
  if (count > 0) {
    std::vector<gid_t> groups(static_cast<std::size_t>(count));
    const int got = ::getgroups(count, groups.data());
    if (got > 0 && std::find(groups.begin(), groups.begin() + got, gid) != groups.begin() + got)
      return;
  }
  const std::string user = user_name(::geteuid());
  throw GroupError(fmt::format(
      "user {} is not a member of the key group {}, so it cannot give key files to it; fix: "
      "usermod -aG {} {} (then start the agent again), or run it with Group={}",
      user, group_name(gid), group_name(gid), user, group_name(gid)));
}

void require_private_path(const fs::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw_errno(fmt::format("cannot check {}", path.string()), errno);
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
    fixes.push_back(fmt::format("chmod {:o} {}", st.st_mode & 07755, path.string()));
  }
  if (problems.empty()) return;
  std::string problem;
  for (const std::string& part : problems) problem += (problem.empty() ? "" : ", and ") + part;
  throw PermissionError(path, problem, join_commands(fixes));
}

void check_private_stat(const struct stat& st, const fs::path& path, PathKind kind,
                        std::optional<gid_t> key_group, std::string_view description) {
  std::vector<std::string> problems;
  std::vector<std::string> fixes;
  const uid_t euid = ::geteuid();
  if (st.st_uid != euid && st.st_uid != 0) {
    problems.push_back(fmt::format("is owned by uid {}, not {}", st.st_uid, euid));
    fixes.push_back(fmt::format("chown {} {}", euid, path.string()));
  }

  const mode_t mode = st.st_mode & 07777;
  // What the key group may have: read, and search for a folder. Never write.
  const mode_t group_may = kind == PathKind::folder ? 0050 : 0040;
  const mode_t group_bits = mode & 0050;  // read and search/execute
  const bool owned_by_key_group = key_group && st.st_gid == *key_group;
  std::vector<std::string> wrongs;
  const bool group_writable = (mode & S_IWGRP) != 0;
  const bool world_writable = (mode & S_IWOTH) != 0;
  if (group_writable || world_writable) {
    wrongs.push_back(group_writable && world_writable ? "group- and world-writable"
                     : group_writable                 ? "group-writable"
                                                      : "world-writable");
  }
  // Group bits that would be right if the key group owned the path: the fix is a chgrp.
  bool suggest_chgrp = false;
  if (group_bits != 0) {
    const bool fits_key_group = (group_bits & ~group_may) == 0;
    const std::string what = (group_bits & 0040) ? "readable" : "accessible";
    if (owned_by_key_group) {
      // Only a file gets here: the key group reads it, never executes it.
      if (!fits_key_group) wrongs.push_back("executable by group " + group_name(st.st_gid));
    } else if (key_group) {
      wrongs.push_back(fmt::format("{} by group {}, not the key group {}", what,
                                   group_name(st.st_gid), group_name(*key_group)));
      suggest_chgrp = fits_key_group;
    } else {
      wrongs.push_back(
          fmt::format("{} by group {} while no key group is set", what, group_name(st.st_gid)));
    }
  }
  if ((mode & 0005) != 0)
    wrongs.push_back((mode & 0004) ? "readable by others" : "accessible by others");

  if (!wrongs.empty()) {
    problems.push_back(fmt::format("is {} (mode {:04o})", join_words(wrongs), mode));
    if (suggest_chgrp)
      fixes.push_back(fmt::format("chgrp {} {}", group_name(*key_group), path.string()));
    const mode_t allowed = 0700 | ((owned_by_key_group || suggest_chgrp) ? group_may : 0);
    const mode_t target = mode & (07000 | allowed);
    if (target != mode) fixes.push_back(fmt::format("chmod {:o} {}", target, path.string()));
  }
  if (problems.empty()) return;
  std::string problem;
  for (const std::string& part : problems) problem += (problem.empty() ? "" : ", and ") + part;
  throw PermissionError(path, problem, join_commands(fixes), description);
}

UniqueFd open_private_folder(const fs::path& path, std::optional<gid_t> key_group,
                             std::string_view description) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    const int error = errno;
    struct stat st {};
    if (error == ENOTDIR && ::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode))
      throw_symlink(path, description);
    if (error == ENOTDIR)
      throw StoreError(fmt::format("{}{} is not a folder", description, path.string()));
    throw_errno(fmt::format("cannot open {}{}", description, path.string()), error);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    throw_errno(fmt::format("cannot check {}", path.string()), errno);
  check_private_stat(st, path, PathKind::folder, key_group, description);
  return fd;
}

void require_private_folder(const fs::path& path, std::optional<gid_t> key_group,
                            std::string_view description) {
  open_private_folder(path, key_group, description);
}

namespace {

UniqueFd open_private_file(const fs::path& path, std::optional<gid_t> key_group,
                           std::string_view description) {
  // O_NONBLOCK: a FIFO in place of the key must not hang the agent.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (!fd) {
    if (errno == ELOOP) throw_symlink(path, description);
    throw_errno(fmt::format("cannot open {}{}", description, path.string()), errno);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0)
    throw_errno(fmt::format("cannot check {}", path.string()), errno);
  if (!S_ISREG(st.st_mode))
    throw StoreError(fmt::format("{}{} is not a file", description, path.string()));
  check_private_stat(st, path, PathKind::file, key_group, description);
  return fd;
}

}  // namespace

void require_private_file(const fs::path& path, std::optional<gid_t> key_group,
                          std::string_view description) {
  open_private_file(path, key_group, description);
}

std::string read_private_file(const fs::path& path, std::optional<gid_t> key_group,
                              std::string_view description) {
  UniqueFd fd = open_private_file(path, key_group, description);
  try {
    return read_fd(fd.get(), path);
  } catch (const std::system_error& e) {
    throw StoreError(fmt::format("cannot read {}: {}", path.string(), e.code().message()));
  }
}

}  // namespace pa::keystore
