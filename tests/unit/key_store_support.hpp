// Helpers shared by the key store's unit tests: umask, folder listings, owners, and a group the
// process may really give files to (so the key group tests run as root and as any other user).
#pragma once

#include <grp.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace pa::keystore::store_test {

// Sets the process umask for one test and restores it.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : previous_(::umask(mask)) {}
  ScopedUmask(const ScopedUmask&) = delete;
  ScopedUmask& operator=(const ScopedUmask&) = delete;
  ~ScopedUmask() { ::umask(previous_); }

 private:
  mode_t previous_;
};

inline std::set<std::string> names_in(const std::filesystem::path& dir) {
  std::set<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir))
    names.insert(entry.path().filename());
  return names;
}

// lstat of a path: the link itself for a symlink.
inline struct stat status_of(const std::filesystem::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) st.st_mode = 0;
  return st;
}

inline gid_t group_of(const std::filesystem::path& path) {
  return status_of(path).st_gid;
}

struct TestGroup {
  gid_t gid;
  std::string name;
};

inline std::string name_of_group(gid_t gid) {
  const struct group* entry = ::getgrgid(gid);
  return entry ? entry->gr_name : std::to_string(gid);
}

// Groups of the group database, in its order.
inline std::vector<TestGroup> database_groups() {
  std::vector<TestGroup> groups;
  ::setgrent();
  while (const struct group* entry = ::getgrent())
    groups.push_back({entry->gr_gid, entry->gr_name});
  ::endgrent();
  return groups;
}

// A named group the process may give its files to, other than its effective group when there is
// one: as root any group of the database (root may chown to any group), otherwise one of its
// supplementary groups (getgroups), else its effective group.
inline TestGroup usable_group() {
  const gid_t own = ::getegid();
  if (::geteuid() == 0) {
    for (const TestGroup& group : database_groups())
      if (group.gid != own) return group;
  } else {
    std::vector<gid_t> supplementary(static_cast<std::size_t>(::getgroups(0, nullptr)));
    const int count = ::getgroups(static_cast<int>(supplementary.size()), supplementary.data());
    for (int i = 0; i < count; ++i) {
      const gid_t gid = supplementary[static_cast<std::size_t>(i)];
      if (gid != own && ::getgrgid(gid) != nullptr) return {gid, name_of_group(gid)};
    }
  }
  return {own, name_of_group(own)};
}

// A named group of the database other than `not_this` (the process need not belong to it).
inline TestGroup other_group(gid_t not_this) {
  for (const TestGroup& group : database_groups())
    if (group.gid != not_this) return group;
  return {not_this, name_of_group(not_this)};
}

// A named group the process does not belong to (nullopt when it belongs to all of them).
inline std::optional<TestGroup> foreign_group() {
  std::vector<gid_t> mine(static_cast<std::size_t>(::getgroups(0, nullptr)));
  const int count = ::getgroups(static_cast<int>(mine.size()), mine.data());
  mine.resize(static_cast<std::size_t>(count > 0 ? count : 0));
  mine.push_back(::getegid());
  for (const TestGroup& group : database_groups()) {
    bool member = false;
    for (gid_t gid : mine) member = member || gid == group.gid;
    if (!member) return group;
  }
  return std::nullopt;
}

}  // namespace pa::keystore::store_test
