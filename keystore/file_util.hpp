#pragma once
// File primitives shared by the key store and the agent's state folder: a move-only file
// descriptor owner, whole-file reads, and atomic, born-private file writes, both by path (the
// state folder) and relative to a folder descriptor (everything below the key store root).
#include <sys/types.h>

#include <filesystem>
#include <functional>
#include <optional>
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

// --- Relative to a folder descriptor. `shown_dir` names the folder in messages only.

// Writes `data` to a new temporary file ".<name>.tmp-XXXXXX" in the folder `dir_fd` and fsyncs
// it; returns the temporary file's name. The file is created with
// O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC and the owner's bits of `mode` only, given to `group`
// (fchown) and only then fchmod'ed to `mode`, so it is never readable by anyone else, not even
// for a moment (a planted symlink or file of that name makes O_EXCL fail and another name is
// tried). Throws std::system_error.
std::string write_temp_file_at(int dir_fd, const std::string& name, std::string_view data,
                               mode_t mode, std::optional<gid_t> group,
                               const std::filesystem::path& shown_dir);

// renameat(2) within one folder. Throws std::system_error.
void rename_at(int dir_fd, const std::string& from, const std::string& to,
               const std::filesystem::path& shown_dir);

// fsync of a folder, so a rename or a new entry in it survives power loss. Throws
// std::system_error.
void fsync_folder(int dir_fd, const std::filesystem::path& shown_dir);

// write_temp_file_at + rename_at + fsync_folder; the temporary file is removed on failure.
// Throws std::system_error.
void write_file_atomic_at(int dir_fd, const std::string& name, std::string_view data, mode_t mode,
                          std::optional<gid_t> group, const std::filesystem::path& shown_dir);

// Reads what is left of an open file. The read buffer is wiped (the text may be a key); the
// caller wipes the result. Throws std::system_error.
std::string read_fd(int fd, const std::filesystem::path& shown);

// --- By path (the state folder).

// write_temp_file_at in `path`'s folder; returns the temporary path. Throws std::system_error.
std::filesystem::path write_temp_file(const std::filesystem::path& path, std::string_view data,
                                      mode_t mode);

// rename(2) that throws std::system_error.
void rename_file(const std::filesystem::path& from, const std::filesystem::path& to);

// fsync of a folder, so a rename in it survives power loss. Throws std::system_error.
void fsync_dir(const std::filesystem::path& dir);

// write_temp_file + rename_file + fsync_dir. Throws std::system_error.
void write_file_atomic(const std::filesystem::path& path, std::string_view data, mode_t mode);

// Removes what write_temp_file left of `path` when the process died before its rename: the
// entries ".<name>.tmp-*" of `path`'s folder that are files or links (a link itself, never what it
// points to). Returns how many went. Throws std::system_error when the folder cannot be read.
std::size_t remove_stale_temp_files(const std::filesystem::path& path);

// Reads a whole (small) file. Throws std::system_error.
std::string read_file(const std::filesystem::path& path);

// Creates `dir` and missing parents with `mode` (0700 for the key store). Throws std::system_error.
void create_private_dirs(const std::filesystem::path& dir, mode_t mode = 0700);

}  // namespace pa::keystore
