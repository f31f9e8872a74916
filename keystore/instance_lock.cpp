#include "instance_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace pa::keystore {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void throw_errno(const std::string& what, int error) {
  throw StoreError(what + ": " + std::strerror(error));
}

// The PID the holder wrote; 0 when the file is empty or holds something else.
pid_t read_holder(int fd) {
  std::array<char, 32> text{};
  const ssize_t got = ::pread(fd, text.data(), text.size() - 1, 0);
  if (got <= 0) return 0;
  long pid = 0;
  for (ssize_t i = 0; i < got && text[static_cast<std::size_t>(i)] != '\n'; ++i) {
    const char c = text[static_cast<std::size_t>(i)];
    if (c < '0' || c > '9' || pid > 100000000) return 0;
    pid = pid * 10 + (c - '0');
  }
  return static_cast<pid_t>(pid);
}

UniqueFd open_folder(const fs::path& folder) {
  UniqueFd fd(::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_errno(fmt::format("cannot open {}", folder.string()), errno);
  return fd;
}

}  // namespace

InstanceLock::InstanceLock(const fs::path& folder)
    : InstanceLock(open_folder(folder).get(), folder) {}

InstanceLock::InstanceLock(int folder_fd, fs::path folder) : folder_(std::move(folder)) {
  const fs::path path = folder_ / kLockFile;
  // O_NONBLOCK: a FIFO planted in its place must not hang the agent. Born 0600 when created.
  constexpr int kFlags = O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;
  bool created = true;
  fd_.reset(::openat(folder_fd, kLockFile, kFlags | O_CREAT | O_EXCL, 0600));
  if (!fd_ && errno == EEXIST) {
    created = false;
    fd_.reset(::openat(folder_fd, kLockFile, kFlags));
  }
  if (!fd_) {
    if (errno == ELOOP)
      throw StoreError(fmt::format("{} is a symlink; the lock file is never followed (remove it)",
                                   path.string()));
    throw_errno(fmt::format("cannot open the lock file {}", path.string()), errno);
  }
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0)
    throw_errno(fmt::format("cannot check {}", path.string()), errno);
  if (!S_ISREG(st.st_mode))
    throw StoreError(fmt::format("{} is not a file (remove it)", path.string()));
  if (created && ::fchmod(fd_.get(), 0600) != 0)
    throw_errno(fmt::format("cannot set the mode of {}", path.string()), errno);
  while (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) throw InstanceLockedError(folder_, read_holder(fd_.get()));
    throw_errno(fmt::format("cannot lock {}", path.string()), errno);
  }
  const std::string pid = fmt::format("{}\n", ::getpid());
  if (::ftruncate(fd_.get(), 0) != 0 ||
      ::pwrite(fd_.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    throw_errno(fmt::format("cannot write our PID into {}", path.string()), errno);
  }
}

InstanceLock::~InstanceLock() {
  // Still locked while it is emptied: nobody else can have written their PID yet.
  if (fd_) (void)::ftruncate(fd_.get(), 0);
}

}  // namespace pa::keystore
