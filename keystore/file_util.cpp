#include "file_util.hpp"

#include "secret.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cryptopp/misc.h>

#include <array>
#include <cerrno>
#include <random>
#include <system_error>
#include <vector>

namespace pa::keystore {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void throw_errno(int error, const std::string& what) {
  throw std::system_error(error, std::generic_category(), what);
}

fs::path parent_or_dot(const fs::path& path) {
  fs::path parent = path.parent_path();
  return parent.empty() ? fs::path(".") : parent;
}

std::string random_suffix() {
  static constexpr std::string_view kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  std::random_device device;
  std::uniform_int_distribution<std::size_t> pick(0, kAlphabet.size() - 1);
  std::string suffix(6, '\0');
  for (char& c : suffix) c = kAlphabet[pick(device)];
  return suffix;
}

void write_all(int fd, std::string_view data, const fs::path& path) {
  while (!data.empty()) {
    ssize_t written = ::write(fd, data.data(), data.size());
    if (written < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "write " + path.string());
    }
    data.remove_prefix(static_cast<std::size_t>(written));
  }
}

UniqueFd open_folder_of(const fs::path& path) {
  const fs::path dir = parent_or_dot(path);
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_errno(errno, "open folder " + dir.string());
  return fd;
}

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) reset(other.release());
  return *this;
}

UniqueFd::~UniqueFd() {
  reset();
}

int UniqueFd::release() noexcept {
  int fd = fd_;
  fd_ = -1;
  return fd;
}

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

std::string write_temp_file_at(int dir_fd, const std::string& name, std::string_view data,
                               mode_t mode, std::optional<gid_t> group, const fs::path& shown_dir) {
  std::string temp;
  UniqueFd fd;
  for (int attempt = 0; !fd; ++attempt) {
    temp = "." + name + ".tmp-" + random_suffix();
    fd.reset(::openat(dir_fd, temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                      mode & 0700));
    if (!fd && (errno != EEXIST || attempt >= 100))
      throw_errno(errno, "create " + (shown_dir / temp).string());
  }
  try {
    // The group first, the group's bits after: never readable by the process's own group.
    if (group && ::fchown(fd.get(), static_cast<uid_t>(-1), *group) != 0)
      throw_errno(errno,
                  "give " + (shown_dir / temp).string() + " to group " + std::to_string(*group));
    // openat() applied the umask; fchmod makes the mode exact (e.g. 0644 for a public key).
    if (::fchmod(fd.get(), mode) != 0) throw_errno(errno, "chmod " + (shown_dir / temp).string());
    write_all(fd.get(), data, shown_dir / temp);
    if (::fsync(fd.get()) != 0) throw_errno(errno, "fsync " + (shown_dir / temp).string());
    if (::close(fd.release()) != 0) throw_errno(errno, "close " + (shown_dir / temp).string());
  } catch (...) {
    ::unlinkat(dir_fd, temp.c_str(), 0);
    throw;
  }
  return temp;
}

void rename_at(int dir_fd, const std::string& from, const std::string& to,
               const fs::path& shown_dir) {
  if (::renameat(dir_fd, from.c_str(), dir_fd, to.c_str()) != 0)
    throw_errno(errno, "rename " + (shown_dir / from).string() + " to " + to);
}

void fsync_folder(int dir_fd, const fs::path& shown_dir) {
  // EINVAL: the file system cannot sync folders (some FUSE and network file systems); nothing
  // to do.
  if (::fsync(dir_fd) != 0 && errno != EINVAL)
    throw_errno(errno, "fsync folder " + shown_dir.string());
}

void write_file_atomic_at(int dir_fd, const std::string& name, std::string_view data, mode_t mode,
                          std::optional<gid_t> group, const fs::path& shown_dir) {
  const std::string temp = write_temp_file_at(dir_fd, name, data, mode, group, shown_dir);
  try {
    rename_at(dir_fd, temp, name, shown_dir);
  } catch (...) {
    ::unlinkat(dir_fd, temp.c_str(), 0);
    throw;
  }
  fsync_folder(dir_fd, shown_dir);
}

std::string read_fd(int fd, const fs::path& shown) {
  std::string content;
  std::array<char, 4096> buffer{};
  for (;;) {
    const ssize_t got = ::read(fd, buffer.data(), buffer.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      Secret::wipe(content);
      CryptoPP::SecureWipeArray(buffer.data(), buffer.size());
      throw_errno(error, "read " + shown.string());
    }
    if (got == 0) break;
    content.append(buffer.data(), static_cast<std::size_t>(got));
  }
  CryptoPP::SecureWipeArray(buffer.data(), buffer.size());
  return content;
}

fs::path write_temp_file(const fs::path& path, std::string_view data, mode_t mode) {
  const UniqueFd dir = open_folder_of(path);
  return parent_or_dot(path) / write_temp_file_at(dir.get(), path.filename().string(), data, mode,
                                                  std::nullopt, parent_or_dot(path));
}

void rename_file(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    throw_errno(errno, "rename " + from.string() + " to " + to.string());
  }
}

void fsync_dir(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_errno(errno, "open folder " + dir.string());
  fsync_folder(fd.get(), dir);
}

void write_file_atomic(const fs::path& path, std::string_view data, mode_t mode) {
  const UniqueFd dir = open_folder_of(path);
  write_file_atomic_at(dir.get(), path.filename().string(), data, mode, std::nullopt,
                       parent_or_dot(path));
}

std::size_t remove_stale_temp_files(const fs::path& path) {
  const std::string prefix = "." + path.filename().string() + ".tmp-";
  UniqueFd dir = open_folder_of(path);
  // fdopendir takes the descriptor; a second one stays ours for unlinkat.
  UniqueFd listing(::openat(dir.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!listing) throw_errno(errno, "open folder " + parent_or_dot(path).string());
  DIR* stream = ::fdopendir(listing.get());
  if (stream == nullptr) throw_errno(errno, "list folder " + parent_or_dot(path).string());
  listing.release();
  std::vector<std::string> stale;
  while (const dirent* entry = ::readdir(stream)) {
    const std::string name = entry->d_name;
    struct stat st {};
    if (name.rfind(prefix, 0) == 0 &&
        ::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)))
      stale.push_back(name);
  }
  ::closedir(stream);
  std::size_t removed = 0;
  for (const std::string& name : stale) {
    if (::unlinkat(dir.get(), name.c_str(), 0) == 0) {
      ++removed;
    } else if (errno != ENOENT) {
      throw_errno(errno, "remove " + (parent_or_dot(path) / name).string());
    }
  }
  if (removed > 0) fsync_folder(dir.get(), parent_or_dot(path));
  return removed;
}

std::string read_file(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno(errno, "open " + path.string());
  return read_fd(fd.get(), path);
}

void create_private_dirs(const fs::path& dir, mode_t mode) {
  fs::path prefix;
  for (const fs::path& part : dir.lexically_normal()) {
    if (part.empty()) continue;  // trailing separator
    prefix /= part;
    if (::mkdir(prefix.c_str(), mode) == 0) {
      // mkdir() applied the umask; make the mode exact.
      if (::chmod(prefix.c_str(), mode) != 0) throw_errno(errno, "chmod " + prefix.string());
      continue;
    }
    if (errno != EEXIST) throw_errno(errno, "create folder " + prefix.string());
    struct stat st {};
    if (::stat(prefix.c_str(), &st) != 0) throw_errno(errno, "stat " + prefix.string());
    if (!S_ISDIR(st.st_mode)) throw_errno(ENOTDIR, "create folder " + prefix.string());
  }
}

}  // namespace pa::keystore
