#include "file_util.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <random>
#include <system_error>

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

fs::path write_temp_file(const fs::path& path, std::string_view data, mode_t mode) {
  const fs::path dir = parent_or_dot(path);
  const std::string name = path.filename().string();
  fs::path temp;
  UniqueFd fd;
  for (int attempt = 0; !fd; ++attempt) {
    temp = dir / ("." + name + ".tmp-" + random_suffix());
    fd.reset(::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode));
    if (!fd && (errno != EEXIST || attempt >= 100)) throw_errno(errno, "create " + temp.string());
  }
  try {
    // open() applied the umask; fchmod makes the mode exact (e.g. 0644 for a public key).
    if (::fchmod(fd.get(), mode) != 0) throw_errno(errno, "chmod " + temp.string());
    write_all(fd.get(), data, temp);
    if (::fsync(fd.get()) != 0) throw_errno(errno, "fsync " + temp.string());
    if (::close(fd.release()) != 0) throw_errno(errno, "close " + temp.string());
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
  return temp;
}

void rename_file(const fs::path& from, const fs::path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    throw_errno(errno, "rename " + from.string() + " to " + to.string());
  }
}

void fsync_dir(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_errno(errno, "open folder " + dir.string());
  // EINVAL: the file system cannot sync folders (some FUSE and network file systems); nothing to
  // do.
  if (::fsync(fd.get()) != 0 && errno != EINVAL) throw_errno(errno, "fsync folder " + dir.string());
}

void write_file_atomic(const fs::path& path, std::string_view data, mode_t mode) {
  const fs::path temp = write_temp_file(path, data, mode);
  try {
    rename_file(temp, path);
  } catch (...) {
    ::unlink(temp.c_str());
    throw;
  }
  fsync_dir(parent_or_dot(path));
}

std::string read_file(const fs::path& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno(errno, "open " + path.string());
  std::string content;
  std::array<char, 4096> buffer;
  for (;;) {
    ssize_t got = ::read(fd.get(), buffer.data(), buffer.size());
    if (got < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, "read " + path.string());
    }
    if (got == 0) break;
    content.append(buffer.data(), static_cast<std::size_t>(got));
  }
  return content;
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
