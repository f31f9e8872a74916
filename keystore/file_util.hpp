#pragma once
// File primitives shared by the key store and the agent's state folder: a move-only file
// descriptor owner and an atomic, born-private file write.
#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace pa::keystore {

// Move-only owner of a POSIX file descriptor (closed on destruction).
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept;
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// Writes `data` to a new temporary file in `path`'s folder, created with
// O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC and `mode` (so it is never readable by others, not even
// for a moment), fsyncs it and returns the temporary path. Throws std::system_error.
std::filesystem::path write_temp_file(const std::filesystem::path& path, std::string_view data,
                                      mode_t mode);

// rename(2) that throws std::system_error.
void rename_file(const std::filesystem::path& from, const std::filesystem::path& to);

// fsync of a folder, so a rename in it survives power loss. Throws std::system_error.
void fsync_dir(const std::filesystem::path& dir);

// write_temp_file + rename_file + fsync_dir. Throws std::system_error.
void write_file_atomic(const std::filesystem::path& path, std::string_view data, mode_t mode);

// Reads a whole (small) file. Throws std::system_error.
std::string read_file(const std::filesystem::path& path);

// Creates `dir` and missing parents with `mode` (0700 for the key store). Throws std::system_error.
void create_private_dirs(const std::filesystem::path& dir, mode_t mode = 0700);

}  // namespace pa::keystore
